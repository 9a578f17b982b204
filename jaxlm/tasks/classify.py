"""Classification fine-tuning: a GPT body, pooling and a linear head over labelled texts.

Dimension key as in jaxlm/model/gpt.py, plus C classes.

Parameters are `{'gpt': <GPT params>, 'head': {'kernel', 'bias'}}`, so the
parameters of a jaxlm pretraining run drop in under 'gpt' (an untied
`lm_head` there is not used). Texts come right-padded with their lengths:
attention is causal, so the hidden states of the real tokens do not depend
on the pads after them, and pooling reads only real tokens.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import linen as nn

from jaxlm import config as config_lib
from jaxlm import rundir
from jaxlm.config import Config, ConfigError, ModelConfig, Pooling
from jaxlm.data import classify as classify_data
from jaxlm.data import tokenizers
from jaxlm.inference import restore
from jaxlm.model.gpt import GPT
from jaxlm.parallel import sharding
from jaxlm.tasks import classify_metrics as cm_lib
from jaxlm.tasks.base import Task
from jaxlm.training import flops as flops_lib
from jaxlm.training.metrics import log
from jaxlm.training.steps import Objective

Batch = dict[str, jax.Array]  # tokens int32[B, L], lengths/labels int32[B], weights f32[B]


def pool(h_BLD, lengths_B, pooling: Pooling):
  """float32 [B, D]: the last real token's state, or the mean over real tokens."""
  h_BLD = h_BLD.astype(jnp.float32)
  L = h_BLD.shape[1]
  if pooling is Pooling.LAST:
    last_B = jnp.clip(lengths_B - 1, 0, L - 1)
    return jnp.take_along_axis(h_BLD, last_B[:, None, None], axis=1)[:, 0]
  mask_BL = jnp.arange(L)[None, :] < lengths_B[:, None]
  total_BD = jnp.einsum('BLD,BL->BD', h_BLD, mask_BL.astype(jnp.float32))
  return total_BD / jnp.maximum(lengths_B, 1)[:, None].astype(jnp.float32)


class Head(nn.Module):
  """Linear map from the pooled state to class logits."""
  num_classes: int

  @nn.compact
  def __call__(self, x_BD):
    D, C = x_BD.shape[-1], self.num_classes
    init = nn.initializers.normal(stddev=0.02)
    w_DC = self.param('kernel', nn.with_logical_partitioning(init, ('embed', None)),
                      (D, C), jnp.float32)
    b_C = self.param('bias', nn.with_logical_partitioning(nn.initializers.zeros, (None,)),
                     (C,), jnp.float32)
    return jnp.einsum('BD,DC->BC', x_BD, w_DC) + b_C[None]


class Classifier(nn.Module):
  """GPT final-norm hidden states -> pooling -> dropout -> linear head."""
  cfg: ModelConfig
  num_classes: int
  pooling: Pooling

  @nn.compact
  def __call__(self, tokens_BL, lengths_B, deterministic: bool = True):
    h_BLD = GPT(self.cfg, name='gpt')(tokens_BL, deterministic, return_hidden=True)
    x_BD = sharding.constrain(pool(h_BLD, lengths_B, self.pooling), ('batch', 'act_embed'))
    x_BD = nn.Dropout(self.cfg.dropout)(x_BD, deterministic=deterministic)
    return Head(self.num_classes, name='head')(x_BD)


def classification_loss(model: Classifier, params, batch: Batch, rng, train: bool):
  """(weighted mean cross-entropy over classes, {'accuracy'})."""
  deterministic = not train or model.cfg.dropout == 0.0
  rngs = {} if deterministic else {'dropout': rng}
  logits_BC = model.apply({'params': params}, batch['tokens'], batch['lengths'],
                          deterministic=deterministic, rngs=rngs)
  losses_B = optax.softmax_cross_entropy_with_integer_labels(logits_BC, batch['labels'])
  weights_B = batch['weights']
  total = jnp.maximum(jnp.sum(weights_B), 1.0)
  correct_B = (jnp.argmax(logits_BC, -1) == batch['labels']).astype(jnp.float32)
  return jnp.sum(losses_B * weights_B) / total, {'accuracy': jnp.sum(correct_B * weights_B) / total}


def predict(model: Classifier, params, batch: Batch) -> jax.Array:
  """Predicted class ids int32[B]."""
  logits_BC = model.apply({'params': params}, batch['tokens'], batch['lengths'],
                          deterministic=True)
  return jnp.argmax(logits_BC, -1).astype(jnp.int32)


def example_inputs(max_length: int) -> tuple:
  """Init inputs of a Classifier: one row of tokens and its length."""
  return (jax.ShapeDtypeStruct((1, max_length), jnp.int32),
          jax.ShapeDtypeStruct((1,), jnp.int32))


def classifier_objective(c: Config) -> Objective:
  """The classifier and its loss; eval outputs are predicted classes."""
  model = Classifier(c.model, len(c.data.class_names), c.classifier.pooling)
  return Objective(model, example_inputs(c.data.max_length), classification_loss, predict)


# --- A pretrained body -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PretrainedRun:
  """What fine-tuning takes from a pretraining run folder."""
  path: str
  model: ModelConfig  # as trained
  tokenizer: tokenizers.Tokenizer
  step: int  # the latest checkpoint


def open_pretrained(path: str) -> PretrainedRun:
  """Reads a run folder's model config, tokenizer and latest step; checks they exist."""
  setting = f'classifier.init_from={path}'
  if not rundir.exists(path):
    raise ConfigError(f'{setting}: no such folder; pass a jaxlm pretraining run folder'
                      ' (config.json, tokenizer.json, checkpoints/)')
  for name, present in ((rundir.CONFIG_FILE, rundir.config_file(path).exists()),
                        (rundir.TOKENIZER_FILE, rundir.has_tokenizer(path)),
                        (rundir.CHECKPOINTS_DIR, rundir.checkpoints_dir(path).exists())):
    if not present:
      raise ConfigError(f'{setting} holds no {name}; pass the folder of a jaxlm'
                        ' pretraining run (python -m jaxlm.main --workdir=...)')
  config_path = str(rundir.config_file(path))
  raw = rundir.read_config_dict(path)
  try:
    model_raw = raw['model']
  except (KeyError, TypeError) as e:
    raise ConfigError(f'{config_path} is not a jaxlm run config ({e!r});'
                      ' pass the folder of a jaxlm pretraining run') from None
  model = config_lib.section(ModelConfig, model_raw, f'{config_path}: model')
  config_lib.validate_model(model, config_path)
  manager = _reader(path)
  step = manager.latest_step()
  manager.close()
  if step is None:
    raise ConfigError(f'{setting} has no complete checkpoint in checkpoints/;'
                      ' train it for at least one checkpoint interval')
  return PretrainedRun(path, model, tokenizers.load_tokenizer(path), step)


def with_pretrained_model(c: Config, run: PretrainedRun) -> Config:
  """c with the run's architecture; checks the tokenizer and max_length fit it."""
  if run.tokenizer.kind is not c.data.tokenizer:
    raise ConfigError(
        f'data.tokenizer={c.data.tokenizer.value} but classifier.init_from={run.path} was'
        f' trained with {run.tokenizer.kind.value}; set data.tokenizer={run.tokenizer.kind.value}')
  if c.data.max_length > run.model.max_len:
    raise ConfigError(
        f'data.max_length={c.data.max_length} exceeds model.max_len={run.model.max_len} of'
        f' classifier.init_from={run.path}; lower data.max_length to at most {run.model.max_len}')
  model = dataclasses.replace(run.model, dropout=c.model.dropout, dtype=c.model.dtype,
                              remat=c.parallel.remat)
  return dataclasses.replace(c, model=model)


def _reader(run_dir: str) -> ocp.CheckpointManager:
  return restore.reader(str(rundir.checkpoints_dir(run_dir)))


def restore_gpt_params(run: PretrainedRun, abstract_gpt):
  """The run's GPT parameters, placed as the ShapeDtypeStructs in abstract_gpt say."""
  manager = _reader(run.path)
  try:
    _check_saved_params(manager, run.step, abstract_gpt)
    target = {'params': abstract_gpt}  # partial: the optimizer state and lm_head stay on disk
    restored = manager.restore(run.step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True)))
  finally:
    manager.close()
  return restored['state']['params']


def _check_saved_params(manager: ocp.CheckpointManager, step: int, abstract_gpt) -> None:
  where = f'{manager.directory}/{step}'
  saved = manager.item_metadata(step)['state']
  saved_params = saved['params'] if 'params' in saved else {}
  flat_saved = {jax.tree_util.keystr(p): x for p, x in
                jax.tree_util.tree_flatten_with_path(saved_params)[0]}
  for path, want in jax.tree_util.tree_flatten_with_path(abstract_gpt)[0]:
    key = jax.tree_util.keystr(path)
    if key not in flat_saved:
      raise ConfigError(f'{where} has no parameter params{key}; it is not a checkpoint of'
                        ' this jaxlm GPT (is the run from another version?)')
    if tuple(flat_saved[key].shape) != tuple(want.shape):
      raise ConfigError(f'{where}: params{key} has shape {tuple(flat_saved[key].shape)},'
                        f' the model needs {tuple(want.shape)}; its config.json does not'
                        ' match its checkpoint')


# --- The task ----------------------------------------------------------------


class Classification(Task):
  """Labelled texts from CSV or TFDS; from scratch or from a pretraining run's body."""
  examples_per_line = True

  def __init__(self, c: Config):
    self.config = c
    self._pretrained = None

  def prepare(self, workdir: str, resuming: bool) -> Config:
    c = self.config
    if c.classifier.init_from:
      self._pretrained = open_pretrained(c.classifier.init_from)
      c = with_pretrained_model(c, self._pretrained)
    train_ex, eval_ex = classify_data.load_examples(c.data, c.train.seed)
    log(f'{len(train_ex.texts)} training and {len(eval_ex.texts)} held-out examples,'
        f' {len(c.data.class_names)} classes')
    if self._pretrained is not None:
      self.tokenizer = self._pretrained.tokenizer
    elif resuming:
      self.tokenizer = tokenizers.build_tokenizer(c.data, workdir, lambda: train_ex.texts)
    else:
      self.tokenizer = tokenizers.new_tokenizer(c.data, lambda: train_ex.texts)
    c = self.config = config_lib.resolve_vocab(c, self.tokenizer.vocab_size)
    d = c.data
    self._train = classify_data.encode(self.tokenizer, train_ex, d.max_length, d.truncation)
    self._eval = classify_data.encode(self.tokenizer, eval_ex, d.max_length, d.truncation)
    self.tokens_per_step = d.batch_size * d.max_length
    self.examples_per_step = d.batch_size
    self.flops_per_token = flops_lib.flops_per_token(c.model, d.max_length)
    return c

  def objective(self, stack=None) -> Objective:
    return classifier_objective(self.config)

  def check_resumable(self, saved: dict, step: int, where: str) -> None:
    now = config_lib.to_dict(self.config)
    for sec, key in (('data', 'class_names'), ('classifier', 'pooling')):
      if saved.get(sec, {}).get(key) != now[sec][key]:
        raise ConfigError(
            f'{where} holds a checkpoint (step {step}) with {sec}.{key}='
            f'{saved.get(sec, {}).get(key)!r}, {now[sec][key]!r} now;'
            ' use a new --workdir or the original setting')

  def start_params(self, abstract_params):
    if self._pretrained is None:
      return None
    log(f'body from {self._pretrained.path} (step {self._pretrained.step})')
    return {'gpt': restore_gpt_params(self._pretrained, abstract_params['gpt'])}

  def describe(self, n_params: int) -> str:
    m = self.config.model
    return (f'classifier: {n_params / 1e6:.2f}M parameters, {m.num_layers} layers,'
            f' d_model {m.d_model}, pooling {self.config.classifier.pooling.value}')

  def train_batch(self, step, process_index, process_count):
    c = self.config
    return classify_data.labelled_train_batch(self._train, step, batch_size=c.data.batch_size,
                                     seed=c.train.seed, process_index=process_index,
                                     process_count=process_count)

  def eval_batches(self, process_index, process_count):
    return classify_data.labelled_eval_batches(self._eval, batch_size=self.config.data.batch_size,
                                      process_index=process_index, process_count=process_count)

  def eval_metrics(self, outputs):
    preds_N = np.concatenate(outputs)[:len(self._eval)]
    cm_CC = cm_lib.confusion_matrix(self._eval.labels_N, preds_N,
                                    len(self.config.data.class_names))
    return {f'eval_{k}': v for k, v in cm_lib.summary(cm_CC).items()}

  def eval_line(self, m):
    return (f'accuracy {m["eval_accuracy"]:.4f} | macro precision'
            f' {m["eval_macro_precision"]:.4f} recall {m["eval_macro_recall"]:.4f}'
            f' F1 {m["eval_macro_f1"]:.4f} | {m["eval_examples"]} examples')

  def train_line(self, values):
    return f' | accuracy {values["accuracy"]:.3f}'

  def finish(self, params, workdir, result):
    if 'eval' in result:
      log(cm_lib.format_report(np.asarray(result['eval']['confusion_matrix']),
                               self.config.data.class_names))
