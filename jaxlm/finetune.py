"""Fine-tunes a GPT classifier on labelled text (topic, sentiment).

  python -m jaxlm.finetune --config=experiments/agnews_classifier.py \
      [--workdir=DIR] [--config.classifier.init_from=RUN_DIR ...]

With classifier.init_from, the body starts from a jaxlm pretraining run
folder: its config.json model section (dropout and dtype come from this
config), its tokenizer (data.tokenizer must name the same kind) and the
parameters of its latest checkpoint. Without it the body starts at random.
The run folder holds config.json, tokenizer.json, metrics.jsonl (train rows;
eval rows with accuracy, macro precision/recall/F1 and the confusion matrix)
and Orbax checkpoints of the whole train state; an existing folder resumes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxlm.tasks import classify
from jaxlm.data import classify as classify_data
from jaxlm.parallel import sharding
from jaxlm.data import tokenizers
from jaxlm.tasks import classify_metrics as cm_lib
from jaxlm import config as config_lib
from jaxlm.training.checkpoint import Checkpointer
from jaxlm.tasks.classify_config import Config, from_configdict, section, to_dict, validate_model
from jaxlm.config import ConfigError, ModelConfig
from jaxlm.training.metrics import MetricWriter, format_duration, log
from jaxlm.training.loop import new_workdir


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
  if not os.path.isdir(path):
    raise ConfigError(f'{setting}: no such folder; pass a jaxlm pretraining run folder'
                      ' (config.json, tokenizer.json, checkpoints/)')
  for name in ('config.json', tokenizers.SPEC_FILE, 'checkpoints'):
    if not os.path.exists(os.path.join(path, name)):
      raise ConfigError(f'{setting} holds no {name}; pass the folder of a jaxlm'
                        ' pretraining run (python -m jaxlm.main --workdir=...)')
  config_path = os.path.join(path, 'config.json')
  try:
    with open(config_path) as f:
      raw = json.load(f)
    model_raw = raw['model']
  except (json.JSONDecodeError, KeyError, TypeError) as e:
    raise ConfigError(f'{config_path} is not a jaxlm run config ({e!r});'
                      ' pass the folder of a jaxlm pretraining run') from None
  model = section(ModelConfig, model_raw, f'{config_path}: model')
  validate_model(model, config_path)
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
  # Handlers for the items jaxlm.training.checkpoint writes; nothing is created or saved.
  return ocp.CheckpointManager(
      os.path.abspath(os.path.join(run_dir, 'checkpoints')),
      options=ocp.CheckpointManagerOptions(create=False),
      item_handlers={'state': ocp.PyTreeCheckpointHandler(),
                     'meta': ocp.JsonCheckpointHandler()})


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


def _check_resumable(ckpt: Checkpointer, config_dict: dict) -> None:
  ckpt.check_compatible(config_dict)  # the model and tokenizer
  step = ckpt.latest_step()
  if step is None:
    return
  saved = ckpt.saved_config(step)
  for sec, key in (('data', 'class_names'), ('classifier', 'pooling')):
    if saved.get(sec, {}).get(key) != config_dict[sec][key]:
      raise ConfigError(
          f'{ckpt.directory} holds a checkpoint (step {step}) with {sec}.{key}='
          f'{saved.get(sec, {}).get(key)!r}, {config_dict[sec][key]!r} now;'
          ' use a new --workdir or the original setting')


def _global_batch(mesh, local: dict) -> dict:
  sh = sharding.batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sh, v) for k, v in local.items()}


def evaluate(s: classify.Steps, params, data: classify_data.Encoded, batch_size: int,
             num_classes: int) -> np.ndarray:
  """The confusion matrix of the eval split."""
  batches = classify_data.eval_batches(data, batch_size=batch_size,
                                       process_index=jax.process_index(),
                                       process_count=jax.process_count())
  preds = [s.predict(params, _global_batch(s.mesh, b)) for b in batches]
  preds_N = np.concatenate(jax.device_get(preds))[:len(data)]
  return cm_lib.confusion_matrix(data.labels_N, preds_N, num_classes)


def run(c: Config, workdir: str | None = None) -> dict:
  """Fine-tunes (or resumes); returns the last train metrics and the final eval summary."""
  workdir = workdir or new_workdir()
  pretrained = open_pretrained(c.classifier.init_from) if c.classifier.init_from else None
  if pretrained is not None:
    c = with_pretrained_model(c, pretrained)
  mesh = sharding.make_mesh(c.parallel)
  train_ex, eval_ex = classify_data.load(c.data, c.train.seed)
  os.makedirs(workdir, exist_ok=True)
  log(f'run folder: {workdir}; {len(train_ex.texts)} training and {len(eval_ex.texts)}'
      f' held-out examples, {c.num_classes} classes')
  if pretrained is not None:
    tokenizer = pretrained.tokenizer
    if jax.process_index() == 0:
      tokenizer.save(workdir)
  else:
    tokenizer = tokenizers.build_tokenizer(c.data, workdir, lambda: train_ex.texts)
  c = config_lib.resolve_vocab(c, tokenizer.vocab_size)
  classify.check_layout(c, mesh)
  config_dict = to_dict(c)
  ckpt = Checkpointer(workdir, keep=c.train.keep_checkpoints, every=c.train.checkpoint_every)
  _check_resumable(ckpt, config_dict)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      json.dump(config_dict, f, indent=2)

  d = c.data
  train_data = classify_data.encode(tokenizer, train_ex, d.max_length, d.truncation)
  eval_data = classify_data.encode(tokenizer, eval_ex, d.max_length, d.truncation)
  with sharding.activate(mesh):
    s = classify.build(c, mesh)
    start = ckpt.latest_step()
    if start is not None:
      state = ckpt.restore(start, s.abstract_state)
      log(f'resumed from step {start}')
    elif pretrained is not None:
      state = s.init(restore_gpt_params(pretrained, s.abstract_state.params['gpt']))
      log(f'body from {pretrained.path} (step {pretrained.step})')
    else:
      state = s.init()
    n_params = sum(x.size for x in jax.tree.leaves(state.params))
    log(f'classifier: {n_params / 1e6:.2f}M parameters, {c.model.num_layers} layers,'
        f' d_model {c.model.d_model}, pooling {c.classifier.pooling.value}; mesh'
        f' {dict(mesh.shape)} on {jax.device_count()} {jax.devices()[0].platform} devices')
    writer = MetricWriter(workdir)
    try:
      result = _loop(c, s, state, start or 0, train_data, eval_data, ckpt, writer)
    finally:
      writer.close()
      ckpt.close()
  return result


def _loop(c: Config, s: classify.Steps, state, start: int, train_data, eval_data,
          ckpt: Checkpointer, writer: MetricWriter) -> dict:
  d, t = c.data, c.train
  config_dict = to_dict(c)
  pidx, pcount = jax.process_index(), jax.process_count()

  def batch(step):
    return _global_batch(s.mesh, classify_data.train_batch(
        train_data, step, batch_size=d.batch_size, seed=t.seed,
        process_index=pidx, process_count=pcount))

  t0 = time.perf_counter()
  train_step = s.train.lower(state, batch(start)).compile()
  log(f'compiled the train step in {time.perf_counter() - t0:.1f}s')
  result = {}
  previous = None  # the step before this one, waited for once this one is queued
  pending = None  # (step, device metrics): read one step late
  run_start = time.perf_counter()
  last = (run_start, start)  # (time, step) of the last report
  for step in range(start, t.steps):
    state, metrics = train_step(state, batch(step))
    if previous is not None:
      jax.block_until_ready(previous)
    previous = metrics['loss']
    if pending is not None:  # its step is done: the next one is queued behind it
      result.update(_report(pending, writer, t.steps, d.batch_size, last))
      pending, last = None, (time.perf_counter(), pending[0])
    done = step + 1
    if done % t.log_every == 0 or done == t.steps:
      pending = (done, metrics)
    if done % t.eval_every == 0 or done == t.steps:
      cm_CC = evaluate(s, state.params, eval_data, d.batch_size, c.num_classes)
      summary = cm_lib.summary(cm_CC)
      writer.write(done, {f'eval_{k}': v for k, v in summary.items()})
      log(f'eval  step {done:>6} | accuracy {summary["accuracy"]:.4f} | macro precision'
          f' {summary["macro_precision"]:.4f} recall {summary["macro_recall"]:.4f}'
          f' F1 {summary["macro_f1"]:.4f} | {summary["examples"]} examples')
      result['eval'] = summary
    if ckpt.save(done, state, config_dict, force=done == t.steps):
      log(f'checkpoint step {done} -> {ckpt.directory}')
  if pending is not None:
    result.update(_report(pending, writer, t.steps, d.batch_size, last))
  ckpt.wait()
  log(f'trained steps {start}..{t.steps} in {format_duration(time.perf_counter() - run_start)}')
  if 'eval' in result:
    log(cm_lib.format_report(np.asarray(result['eval']['confusion_matrix']), d.class_names))
  result['step'] = int(jax.device_get(state.step))
  return result


def _report(pending, writer: MetricWriter, total: int, batch_size: int,
            last: tuple[float, int]) -> dict:
  step, metrics = pending
  values = {k: float(v) for k, v in jax.device_get(metrics).items()}
  if not math.isfinite(values['loss']):
    raise FloatingPointError(
        f'loss is {values["loss"]} at step {step}; lower train.learning_rate or'
        ' raise train.warmup_steps, then resume from the last checkpoint')
  elapsed = max(time.perf_counter() - last[0], 1e-9)
  values['examples_per_sec'] = (step - last[1]) * batch_size / elapsed
  writer.write(step, values)
  log(f'train step {step:>6}/{total} | loss {values["loss"]:.4f}'
      f' | accuracy {values["accuracy"]:.3f} | lr {values["learning_rate"]:.2e}'
      f' | grad norm {values["grad_norm"]:.2f} | {values["examples_per_sec"]:,.0f} examples/s')
  return {'loss': values['loss'], 'accuracy': values['accuracy']}


def main() -> None:
  """The command line: flags, config, run; bad settings print one line and exit 1."""
  from absl import app, flags, logging  # noqa: PLC0415  (not needed when imported)
  from ml_collections import config_flags  # noqa: PLC0415

  config_flag = config_flags.DEFINE_config_file('config', None, 'Classifier experiment file.')
  workdir_flag = flags.DEFINE_string('workdir', None, 'Run folder; resumes if it exists.')
  flags.mark_flags_as_required(['config'])

  def _main(argv):
    if len(argv) > 1:
      raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    logging.set_verbosity(logging.WARNING)  # Orbax logs every file at INFO
    try:
      run(from_configdict(config_flag.value), workdir_flag.value)
    except (ConfigError, FloatingPointError) as e:
      print(f'error: {e}', file=sys.stderr)
      sys.exit(1)

  app.run(_main)


if __name__ == '__main__':
  main()
