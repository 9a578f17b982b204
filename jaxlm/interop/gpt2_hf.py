"""GPT-2 weights to and from the Hugging Face format (safetensors only).

  python -m jaxlm.interop.gpt2_hf import --hf_dir=DIR --workdir=RUN
  python -m jaxlm.interop.gpt2_hf export --workdir=RUN --out_dir=DIR

`import` reads a Hugging Face GPT-2 directory (`config.json` and
`model.safetensors`, or a sharded `model.safetensors.index.json`) and writes a
jaxlm run folder: `config.json` (GPT-2 124M's run settings, `gpt2_settings()`,
the same as experiments/gpt2_124m.py, with the architecture taken from the HF
config) and an Orbax checkpoint at step 0 holding the weights and a fresh
optimizer state. `export` writes the newest readable checkpoint (or --step)
of a run with the GPT-2 architecture (model.use_bias and model.tie_embeddings)
as a directory that `transformers.GPT2LMHeadModel.from_pretrained` loads; it
restores as sampling does (jaxlm/inference/restore.py), passing over an
unreadable newest checkpoint with one line. Tensors are read with `safetensors.numpy`: pickles
(`pytorch_model.bin`) are never opened, since loading one runs its code.

The two models compute the same function: HF's `gelu_new` is nn.gelu with
approximate=True, both LayerNorms use eps 1e-5, both scale attention by
1/sqrt(head_dim). HF's Conv1D weights are [in, out], as jaxlm's are.

Vocabulary: kept at the HF size (50257 for GPT-2), never padded. Each padded
row would add a real logit (0 for a zero row) to the softmax, so padding
changes the loss and what sampling picks. 50257 = 29 x 1733, so an imported
run trains with parallel.model=1 (data, ZeRO and pipeline parallelism all
work); tensor parallelism over a padded vocabulary needs the logits beyond
the real vocabulary masked, which jaxlm's model does not do.

Precision: the run keeps the experiment's compute dtype (bfloat16 for
gpt2_124m; parameters are float32). Logits match transformers' in float32.

Tokenizer: GPT-2's byte-level BPE is none of jaxlm's tokenizers (char, byte,
sentencepiece) and is not carried over. What works: the weights, logits and
sampling over GPT-2 token ids (encode and decode text with the GPT-2
tokenizer of `transformers` or `tiktoken`), and export back to HF. What does
not: `python -m jaxlm.main` continuing the run trains its own SentencePiece
tokenizer, whose ids mean other pieces than GPT-2's, so continued training
uses GPT-2's weights only as an initialisation; and the end-of-run sample text
is decoded with that tokenizer.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath

from jaxlm import config as config_lib
from jaxlm import rundir
from jaxlm.inference import restore
from jaxlm.parallel import sharding
from jaxlm.training import steps as steps_lib
from jaxlm.training.checkpoint import Checkpointer
from jaxlm.config import Config, ConfigError, ModelConfig
from jaxlm.experiments import load_configdict
from jaxlm.model.gpt import GPT

EXPERIMENT = 'experiments/gpt2_124m.py'  # a checkout's copy of gpt2_settings()
CONFIG_FILE = 'config.json'  # Hugging Face's, in an HF directory
WEIGHTS_FILE = 'model.safetensors'
INDEX_FILE = 'model.safetensors.index.json'
PICKLE_FILES = ('pytorch_model.bin', 'pytorch_model.bin.index.json')
TANH_GELUS = ('gelu_new', 'gelu_pytorch_tanh')  # both 0.5x(1 + tanh(...)), as nn.gelu
LAYER_NORM_EPS = 1e-5  # jaxlm/model/gpt.py LayerNorm
# Buffers that old transformers versions saved with the weights: masks, not weights.
_BUFFER = re.compile(r'h\.\d+\.attn\.(bias|masked_bias)$')


# ---------------------------------------------------------------- HF -> jaxlm


def read_hf_config(hf_dir: str) -> dict:
  """Checks a HF GPT-2 config.json; returns the jaxlm model settings it fixes."""
  if not os.path.isdir(hf_dir):
    raise ConfigError(f'--hf_dir={hf_dir} is not a directory; pass a Hugging Face GPT-2'
                      f' directory ({CONFIG_FILE} + {WEIGHTS_FILE})')
  path = os.path.join(hf_dir, CONFIG_FILE)
  if not os.path.exists(path):
    raise ConfigError(f'{hf_dir} has no {CONFIG_FILE}; pass a Hugging Face GPT-2 directory'
                      ' as save_pretrained writes it')
  try:
    with open(path) as f:
      hf = json.load(f)
  except json.JSONDecodeError as e:
    raise ConfigError(f'{path} is not valid JSON ({e.msg}, line {e.lineno}); save the model'
                      ' again with save_pretrained') from None
  if not isinstance(hf, dict):
    raise ConfigError(f'{path} is not a Hugging Face config (a JSON object); save the model'
                      ' again with save_pretrained')
  missing = [k for k in ('n_embd', 'n_head', 'n_layer', 'n_positions', 'vocab_size')
             if k not in hf]
  if hf.get('model_type') == 'gpt2' and missing:
    raise ConfigError(f'{path} lacks {", ".join(missing)}; it is not a complete GPT-2 config,'
                      ' save the model again with save_pretrained')
  if hf.get('model_type') != 'gpt2':
    raise ConfigError(f'{path}: model_type={hf.get("model_type")!r}, not gpt2;'
                      ' only GPT-2 checkpoints are read')
  checks = (
      ('activation_function', hf.get('activation_function', 'gelu_new') in TANH_GELUS,
       f'jaxlm uses the tanh GELU ({", ".join(TANH_GELUS)})'),
      ('layer_norm_epsilon', hf.get('layer_norm_epsilon', LAYER_NORM_EPS) == LAYER_NORM_EPS,
       f'jaxlm LayerNorm uses {LAYER_NORM_EPS}'),
      ('tie_word_embeddings', hf.get('tie_word_embeddings', True) is True,
       'jaxlm imports GPT-2 with tied input and output embeddings'),
      ('scale_attn_weights', hf.get('scale_attn_weights', True) is True,
       'jaxlm scales attention by 1/sqrt(head_dim)'),
      ('scale_attn_by_inverse_layer_idx', not hf.get('scale_attn_by_inverse_layer_idx', False),
       'jaxlm scales every layer alike'),
      ('add_cross_attention', not hf.get('add_cross_attention', False),
       'jaxlm is a decoder without cross-attention'),
  )
  for field, ok, why in checks:
    if not ok:
      raise ConfigError(f'{path}: {field}={hf.get(field)!r} is not supported; {why}')
  d_model, heads = hf['n_embd'], hf['n_head']
  if d_model % heads:
    raise ConfigError(f'{path}: n_head={heads} does not divide n_embd={d_model}')
  return {
      'num_layers': hf['n_layer'], 'num_heads': heads, 'd_model': d_model,
      'd_ff': hf.get('n_inner') or 4 * d_model, 'max_len': hf['n_positions'],
      'vocab_size': hf['vocab_size'], 'tie_embeddings': True, 'use_bias': True,
  }


def _weight_files(hf_dir: str) -> list[str]:
  index = os.path.join(hf_dir, INDEX_FILE)
  if os.path.exists(index):
    with open(index) as f:
      names = sorted(set(json.load(f)['weight_map'].values()))
    return [os.path.join(hf_dir, n) for n in names]
  path = os.path.join(hf_dir, WEIGHTS_FILE)
  if os.path.exists(path):
    return [path]
  if any(os.path.exists(os.path.join(hf_dir, n)) for n in PICKLE_FILES):
    raise ConfigError(
        f'{hf_dir} holds pytorch_model.bin but no {WEIGHTS_FILE}; only safetensors is read'
        ' (unpickling runs code): convert it where you trust the file, with'
        ' GPT2LMHeadModel.from_pretrained(DIR).save_pretrained(OUT, safe_serialization=True)')
  raise ConfigError(f'{hf_dir} has no {WEIGHTS_FILE}; pass a directory that'
                    ' save_pretrained(..., safe_serialization=True) wrote')


def _safetensors():
  try:
    import safetensors  # (only this file needs it)
    import safetensors.numpy
  except ImportError:
    raise ConfigError('jaxlm.interop.gpt2_hf needs safetensors: pip install safetensors') from None
  return safetensors


def read_hf_tensors(hf_dir: str) -> dict[str, np.ndarray]:
  """The float32 tensors of a HF GPT-2 directory, named without `transformer.`."""
  st = _safetensors()
  tensors = {}
  for path in _weight_files(hf_dir):
    try:
      loaded = st.numpy.load_file(path)
    except TypeError as e:  # a dtype numpy lacks (bfloat16)
      raise ConfigError(f'{path} holds tensors numpy cannot read ({e}); re-save the model in'
                        ' float32 or float16') from None
    except (st.SafetensorError, OSError) as e:
      raise ConfigError(f'{path} is not a readable safetensors file ({e}); it is likely'
                        ' truncated or corrupt: download or save it again') from None
    for name, x in loaded.items():
      tensors[name.removeprefix('transformer.')] = np.asarray(x, np.float32)
  lm_head = tensors.pop('lm_head.weight', None)
  if lm_head is not None and not np.array_equal(lm_head, tensors.get('wte.weight')):
    raise ConfigError(f'{hf_dir}: lm_head.weight differs from wte.weight; jaxlm imports'
                      ' GPT-2 with tied embeddings only')
  return {k: v for k, v in tensors.items() if not _BUFFER.search(k)}


def _expected_shapes(m: ModelConfig) -> dict[str, tuple[int, ...]]:
  D, F = m.d_model, m.d_ff
  shapes = {'wte.weight': (m.vocab_size, D), 'wpe.weight': (m.max_len, D),
            'ln_f.weight': (D,), 'ln_f.bias': (D,)}
  per_layer = {'ln_1.weight': (D,), 'ln_1.bias': (D,), 'ln_2.weight': (D,),
               'ln_2.bias': (D,), 'attn.c_attn.weight': (D, 3 * D),
               'attn.c_attn.bias': (3 * D,), 'attn.c_proj.weight': (D, D),
               'attn.c_proj.bias': (D,), 'mlp.c_fc.weight': (D, F),
               'mlp.c_fc.bias': (F,), 'mlp.c_proj.weight': (F, D), 'mlp.c_proj.bias': (D,)}
  for i in range(m.num_layers):
    shapes.update({f'h.{i}.{k}': v for k, v in per_layer.items()})
  return shapes


def check_tensors(tensors: dict[str, np.ndarray], m: ModelConfig, source: str) -> None:
  """Raises ConfigError unless `tensors` are exactly GPT-2's for model `m`."""
  expected = _expected_shapes(m)
  unexpected = sorted(set(tensors) - set(expected))
  if unexpected:
    raise ConfigError(f'{source}: unexpected tensor {unexpected[0]}; not a plain GPT-2 LM'
                      f' checkpoint with the layers of {CONFIG_FILE}')
  for name, shape in expected.items():
    if name not in tensors:
      raise ConfigError(f'{source}: tensor {name} is missing; the weights do not match'
                        f' {CONFIG_FILE}')
    if tensors[name].shape != shape:
      raise ConfigError(f'{source}: tensor {name} has shape {tensors[name].shape},'
                        f' {CONFIG_FILE} implies {shape}')


def params_from_hf(t: dict[str, np.ndarray], m: ModelConfig) -> dict:
  """jaxlm GPT params (canonical layer order) from checked HF GPT-2 tensors."""
  N, D, H, K = m.num_layers, m.d_model, m.num_heads, m.head_dim

  def stacked(name):  # [N, ...]
    return np.stack([t[f'h.{i}.{name}'] for i in range(N)])

  qkv_NDCHK = stacked('attn.c_attn.weight').reshape(N, D, 3, H, K)
  return {
      'wte': t['wte.weight'],
      'wpe': t['wpe.weight'],
      'stack': {'blocks': {
          'ln_attn': {'scale': stacked('ln_1.weight'), 'bias': stacked('ln_1.bias')},
          'attn': {
              'qkv': qkv_NDCHK.transpose(0, 2, 1, 3, 4),
              'qkv_bias': stacked('attn.c_attn.bias').reshape(N, 3, H, K),
              'out': stacked('attn.c_proj.weight').reshape(N, H, K, D),
              'out_bias': stacked('attn.c_proj.bias'),
          },
          'ln_mlp': {'scale': stacked('ln_2.weight'), 'bias': stacked('ln_2.bias')},
          'mlp': {
              'up': stacked('mlp.c_fc.weight'), 'up_bias': stacked('mlp.c_fc.bias'),
              'down': stacked('mlp.c_proj.weight'), 'down_bias': stacked('mlp.c_proj.bias'),
          },
      }},
      'ln_final': {'scale': t['ln_f.weight'], 'bias': t['ln_f.bias']},
  }


def _check_param_tree(params, m: ModelConfig) -> None:
  # Guards this file against changes of jaxlm/model/gpt.py's parameters.
  abstract = sharding.unbox_shapes(steps_lib.abstract_params(GPT(m), 1))
  ours = jax.tree.map(lambda x: tuple(x.shape), params)
  theirs = jax.tree.map(lambda x: tuple(x.shape), abstract)
  if ours != theirs:
    raise ValueError('jaxlm/model/gpt.py parameters no longer match jaxlm/interop/gpt2_hf.py\'s'
                     ' GPT-2 mapping; update params_from_hf and hf_from_params')


def gpt2_settings() -> ml_collections.ConfigDict:
  """GPT-2 small (124M) on lm1b: an import's run settings, the same as experiments/gpt2_124m.py."""
  c = ml_collections.ConfigDict()
  c.model = ml_collections.ConfigDict(dict(
      num_layers=12, num_heads=12, d_model=768, d_ff=3072, max_len=1024,
      dropout=0.0, dtype='bfloat16', vocab_size=50304, vocab_multiple=128,
      tie_embeddings=True, use_bias=True,
      attention='auto', scan_unroll=12,
  ))
  c.data = ml_collections.ConfigDict(dict(
      source='tfds', dataset='lm1b', text_key='text',
      train_split='train', eval_split='test', manual_dir='',
      tfds_data_dir='', train_files='', eval_files='',
      tokenizer='sentencepiece', vocab_size=50257, seq_len=1024,
      batch_size=512,
  ))
  c.train = ml_collections.ConfigDict(dict(
      steps=20000, learning_rate=6e-4, min_lr_ratio=0.1, warmup_steps=700,
      weight_decay=0.1, beta1=0.9, beta2=0.95, grad_clip=1.0,
      grad_accum_steps=1, seed=0, log_every=50, eval_every=1000,
      eval_steps=50, checkpoint_every=1000, keep_checkpoints=3,
      sample_prompt='The', sample_tokens=100, sample_temperature=0.8,
      on_nonfinite='skip', spike_factor=3.0,
  ))
  c.parallel = ml_collections.ConfigDict(dict(
      data=-1, model=1, pipeline=1, zero_stage=0, remat='none',
      microbatches=1, pipeline_schedule='gpipe', pipeline_repeats=1))
  c.profile = ml_collections.ConfigDict(dict(start_step=10, num_steps=0))
  return c


def import_config(hf_dir: str, experiment: str | None = None, *, dtype: str | None = None
                  ) -> Config:
  """The run config: gpt2_settings() (or an experiment file) with the HF architecture.

  dtype sets model.dtype, the compute dtype (parameters are float32).
  """
  model = read_hf_config(hf_dir)
  if experiment is None:
    cd = gpt2_settings()
  else:
    try:
      cd = load_configdict(experiment)
    except FileNotFoundError:
      raise ConfigError(f'--config={experiment} does not exist (from {os.getcwd()}); pass an'
                        ' experiment file, or none for the GPT-2 124M settings') from None
  if dtype is not None and dtype not in restore.DTYPES:
    raise ConfigError(f'dtype={dtype!r} is not one of: {", ".join(restore.DTYPES)} (None:'
                      f' {cd.model.dtype}, the settings\' model.dtype)')
  cd.model.update({k: v for k, v in model.items()})
  if dtype is not None:
    cd.model.dtype = dtype
  cd.data.vocab_size = model['vocab_size']  # a tokenizer trained later matches
  cd.data.seq_len = min(cd.data.seq_len, model['max_len'])
  return config_lib.from_configdict(cd)


def _plain_layout(c: Config) -> tuple[Config, jax.sharding.Mesh]:
  # One device, no pipeline: parameters in canonical layer order. Orbax
  # restores onto whatever layout a later run uses.
  p = dataclasses.replace(c.parallel, data=1, model=1, pipeline=1, zero_stage=0)
  c = dataclasses.replace(c, parallel=p)
  return c, sharding.make_mesh(p, jax.devices()[:1])


def _refuse_existing(path: str, flag: str, what: str) -> None:
  p = epath.Path(path)
  if p.exists() and (not p.is_dir() or any(True for _ in p.iterdir())):
    raise ConfigError(f'--{flag}={path} already exists and is not empty; {what} never'
                      ' overwrites: pass a new folder')


def import_hf(hf_dir: str, workdir: str, experiment: str | None = None, *,
              dtype: str | None = None) -> Config:
  """Writes a jaxlm run folder (config.json, checkpoint at step 0) from a HF directory.

  experiment: a file of the other run settings (default: gpt2_settings()).
  """
  _refuse_existing(workdir, 'workdir', 'import')
  c = import_config(hf_dir, experiment, dtype=dtype)
  tensors = read_hf_tensors(hf_dir)
  check_tensors(tensors, c.model, hf_dir)
  params = params_from_hf(tensors, c.model)
  _check_param_tree(params, c.model)

  layout, mesh = _plain_layout(c)
  with sharding.activate(mesh):
    s = steps_lib.build(layout, mesh)
    params = jax.device_put(params, s.state_shardings.params)
    opt_state = jax.jit(s.tx.init, out_shardings=s.state_shardings.opt_state)(params)
    _, train_rng = jax.random.split(jax.random.PRNGKey(c.train.seed))  # as steps.init_state
    state = steps_lib.TrainState(
        step=jax.device_put(jnp.zeros((), jnp.int32), s.state_shardings.step),
        params=params, opt_state=opt_state,
        rng=jax.device_put(train_rng, s.state_shardings.rng),
        nonfinite=jax.device_put(jnp.zeros((), jnp.int32), s.state_shardings.nonfinite))
  config_dict = config_lib.to_dict(c)
  rundir.make(workdir)
  ckpt = Checkpointer(workdir, keep=c.train.keep_checkpoints, every=c.train.checkpoint_every)
  ckpt.save(0, state, config_dict, force=True)
  ckpt.wait()
  ckpt.close()
  rundir.write_config_dict(workdir, config_dict)
  return c


# ---------------------------------------------------------------- jaxlm -> HF


def read_run_params(workdir: str, step: int | None = None) -> tuple[Config, dict]:
  """The config and params (canonical layer order, one device, numpy) of a run's checkpoint.

  The newest readable one by default (one line on stderr when it passes one over).
  """
  if not rundir.has_checkpoints(workdir):
    raise ConfigError(f'--workdir={workdir} holds no checkpoint in checkpoints/; pass the'
                      ' folder of a jaxlm run or import')
  c = restore.read_config(workdir)
  layout, mesh = _plain_layout(c)
  directory = str(rundir.checkpoints_dir(workdir))
  model = GPT(layout.model)
  with sharding.activate(mesh):
    _, params = restore.restore_newest(
        workdir, lambda s: restore.restore_params(directory, s, model, mesh, c.data.seq_len),
        step=step)
  return c, params


def check_exportable(m: ModelConfig) -> None:
  """Raises ConfigError unless the model has GPT-2's architecture."""
  for name, value in (('model.use_bias', m.use_bias),
                      ('model.tie_embeddings', m.tie_embeddings)):
    if not value:
      raise ConfigError(f'{name}=False: GPT-2 has biases and tied embeddings; only runs'
                        f' with {name}=True can be exported')


def hf_from_params(params, m: ModelConfig) -> dict[str, np.ndarray]:
  """HF GPT-2 tensors (`transformer.` names, Conv1D [in, out]) from jaxlm params."""
  N, D = m.num_layers, m.d_model
  p = jax.tree.map(lambda x: np.asarray(x, np.float32), jax.device_get(params))
  b = p['stack']['blocks']
  per_layer = {
      'ln_1.weight': b['ln_attn']['scale'], 'ln_1.bias': b['ln_attn']['bias'],
      'attn.c_attn.weight': b['attn']['qkv'].transpose(0, 2, 1, 3, 4).reshape(N, D, 3 * D),
      'attn.c_attn.bias': b['attn']['qkv_bias'].reshape(N, 3 * D),
      'attn.c_proj.weight': b['attn']['out'].reshape(N, D, D),
      'attn.c_proj.bias': b['attn']['out_bias'],
      'ln_2.weight': b['ln_mlp']['scale'], 'ln_2.bias': b['ln_mlp']['bias'],
      'mlp.c_fc.weight': b['mlp']['up'], 'mlp.c_fc.bias': b['mlp']['up_bias'],
      'mlp.c_proj.weight': b['mlp']['down'], 'mlp.c_proj.bias': b['mlp']['down_bias'],
  }
  tensors = {'wte.weight': p['wte'], 'wpe.weight': p['wpe'],
             'ln_f.weight': p['ln_final']['scale'], 'ln_f.bias': p['ln_final']['bias']}
  for i in range(N):
    tensors.update({f'h.{i}.{k}': v[i] for k, v in per_layer.items()})
  # save_file wants C-contiguous arrays; transposes and layer slices may not be.
  return {f'transformer.{k}': np.ascontiguousarray(v) for k, v in tensors.items()}


def hf_config(m: ModelConfig) -> dict:
  """A GPT2LMHeadModel config.json for model `m`."""
  return {
      'architectures': ['GPT2LMHeadModel'], 'model_type': 'gpt2',
      'activation_function': 'gelu_new', 'layer_norm_epsilon': LAYER_NORM_EPS,
      'vocab_size': m.vocab_size, 'n_positions': m.max_len, 'n_embd': m.d_model,
      'n_layer': m.num_layers, 'n_head': m.num_heads, 'n_inner': m.d_ff,
      'resid_pdrop': m.dropout, 'embd_pdrop': m.dropout, 'attn_pdrop': m.dropout,
      'initializer_range': 0.02, 'tie_word_embeddings': True, 'scale_attn_weights': True,
      'scale_attn_by_inverse_layer_idx': False, 'reorder_and_upcast_attn': False,
      'bos_token_id': None, 'eos_token_id': None,  # jaxlm's tokenizers are not GPT-2's
  }


def export_hf(workdir: str, out_dir: str, step: int | None = None) -> Config:
  """Writes a run's checkpoint as a HF GPT-2 directory (config.json, model.safetensors).

  The newest readable checkpoint by default, or `step`.
  """
  st = _safetensors()
  _refuse_existing(out_dir, 'out_dir', 'export')
  if rundir.has_checkpoints(workdir):
    check_exportable(restore.read_config(workdir).model)  # before reading any weights
  c, params = read_run_params(workdir, step)
  tensors = hf_from_params(params, c.model)
  # Written next to out_dir and renamed into place: never a half-written directory.
  tmp = f'{out_dir.rstrip(os.sep)}.tmp{os.getpid()}'
  os.makedirs(tmp)
  try:
    with open(os.path.join(tmp, CONFIG_FILE), 'w') as f:
      json.dump(hf_config(c.model), f, indent=2)
    # transformers refuses safetensors files without format metadata.
    st.numpy.save_file(tensors, os.path.join(tmp, WEIGHTS_FILE), metadata={'format': 'pt'})
    os.rename(tmp, out_dir)  # also takes the place of an empty out_dir
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return c


# ---------------------------------------------------------------- CLI


def main() -> None:
  """The command line: import|export and flags; bad input prints one line, exits 1."""
  from absl import flags  # (not needed when imported)

  import jaxlm  # the verbs are the Python API's jaxlm.import_hf and jaxlm.export_hf
  from jaxlm import cli

  hf_dir = flags.DEFINE_string('hf_dir', None, 'import: Hugging Face GPT-2 directory.')
  workdir = flags.DEFINE_string('workdir', None, 'jaxlm run folder (import makes a new one).')
  out_dir = flags.DEFINE_string('out_dir', None, 'export: new Hugging Face directory.')
  experiment = flags.DEFINE_string(
      'config', None, 'import: experiment file of the run settings (default: GPT-2 124M\'s,'
      f' as {EXPERIMENT}); the HF config sets the architecture.')
  dtype = flags.DEFINE_string('dtype', None, 'import: compute dtype (model.dtype), e.g.'
                              ' float32; default: the settings\'.')
  step = flags.DEFINE_integer('step', None,
                              'export: checkpoint step (default: the newest readable).')

  def run(command: str) -> str:
    if command == 'import':
      if not hf_dir.value or not workdir.value:
        raise ConfigError('import needs --hf_dir=DIR and --workdir=RUN')
      c = jaxlm.import_hf(hf_dir.value, workdir.value, dtype=dtype.value,
                          experiment=experiment.value)
      return (f'imported {hf_dir.value} -> {workdir.value}: checkpoint at step 0,'
              f' {c.model.num_layers} layers, vocab {c.model.vocab_size}')
    if not workdir.value or not out_dir.value:
      raise ConfigError('export needs --workdir=RUN and --out_dir=DIR')
    jaxlm.export_hf(workdir.value, out_dir.value, step=step.value)
    return f'exported {workdir.value} -> {out_dir.value}'

  def _main(args):
    if len(args) != 1 or args[0] not in ('import', 'export'):
      raise ConfigError('name the command: python -m jaxlm.hf import|export [--flags]')
    print(run(args[0]))

  cli.run_command(_main, positional=1)


if __name__ == '__main__':
  main()
