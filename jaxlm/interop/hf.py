"""Hugging Face checkpoints in and out of jaxlm run folders: GPT-2 and the Llama family.

  python -m jaxlm.hf import --hf_dir=DIR --workdir=RUN [--dtype=bfloat16]
  python -m jaxlm.hf export --workdir=RUN --out_dir=DIR [--step=N]

`import` reads a Hugging Face directory of a GPT-2, Llama, Mistral or Qwen2
causal LM (`config.json` and `model.safetensors`, or a sharded
`model.safetensors.index.json`) and writes a jaxlm run folder: `config.json`
(GPT-2 124M's run settings, `gpt2_settings()`, or an experiment file's, with
the architecture taken from the HF config), `hf_source.json` (that HF config)
and an Orbax checkpoint at step 0 holding the weights and a fresh optimizer
state, read one layer at a time into ZeRO-3 shards over the local devices
(the host never holds the whole model). `export` writes the newest readable
checkpoint (or --step) as a directory that transformers' `from_pretrained` loads, with the source's
config.json settings kept where jaxlm does not set them (activation name,
token ids). It restores as sampling does (jaxlm/inference/restore.py),
passing over an unreadable newest checkpoint with one line. Tensors are read
with `safetensors.numpy`: pickles (`pytorch_model.bin`) are never opened,
since loading one runs its code. Which HF tensor is which jaxlm parameter is
jaxlm/interop/hf_families.py's.

Vocabulary: padded to a multiple of model.vocab_multiple (the experiment's,
128 for GPT-2 124M's settings, or the vocab_multiple given) with zero rows, so
that a model axis dividing it splits the embedding: GPT-2's 50257 becomes
50304. model.real_vocab_size keeps the HF size, and the model masks the
padding's logits (jaxlm/model/gpt.py), so the loss and what sampling picks are
the unpadded model's. Export drops the padding again.

Precision: an import computes in float32 unless dtype is given; then its
logits equal transformers' within 1e-4 (docs/interop.md has what bf16 costs).

Tokenizer: a `tokenizer.json` beside the weights comes along (data.tokenizer=
huggingface, read by the `tokenizers` library), with the source's EOS id, so
the run samples, evaluates and fine-tunes on text like a trained one; without
one the run takes token ids (docs/interop.md).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath

from jaxlm import config as config_lib
from jaxlm import rundir
from jaxlm.inference import restore
from jaxlm.interop import hf_families as families
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
GENERATION_FILE = 'generation_config.json'
TOKENIZER_FILE = 'tokenizer.json'  # a Hugging Face tokenizer (the tokenizers library's)
PICKLE_FILES = ('pytorch_model.bin', 'pytorch_model.bin.index.json')
IMPORT_DTYPE = 'float32'  # an import's compute dtype unless one is asked for


# ---------------------------------------------------------------- HF -> jaxlm


def read_hf_config(hf_dir: str) -> dict:
  """A HF directory's config.json, checked to be JSON and an object."""
  if not os.path.isdir(hf_dir):
    raise ConfigError(f'--hf_dir={hf_dir} is not a directory; pass a Hugging Face model'
                      f' directory ({CONFIG_FILE} + {WEIGHTS_FILE})')
  path = os.path.join(hf_dir, CONFIG_FILE)
  if not os.path.exists(path):
    raise ConfigError(f'{hf_dir} has no {CONFIG_FILE}; pass a Hugging Face model directory'
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
  families.family_of(hf, path)
  return hf


def _weight_files(hf_dir: str) -> list[str]:
  index = os.path.join(hf_dir, INDEX_FILE)
  if os.path.exists(index):
    with open(index) as f:
      names = sorted(set(json.load(f)['weight_map'].values()))
    paths = [os.path.join(hf_dir, n) for n in names]
    missing = [n for n, p in zip(names, paths) if not os.path.exists(p)]
    if missing:
      raise ConfigError(f'{index} names {missing[0]}, which {hf_dir} lacks; download the'
                        f' missing shard ({len(missing)} of {len(names)} are absent)')
    return paths
  path = os.path.join(hf_dir, WEIGHTS_FILE)
  if os.path.exists(path):
    return [path]
  if any(os.path.exists(os.path.join(hf_dir, n)) for n in PICKLE_FILES):
    raise ConfigError(
        f'{hf_dir} holds pytorch_model.bin but no {WEIGHTS_FILE}; only safetensors is read'
        ' (unpickling runs code): convert it where you trust the file, with'
        ' AutoModelForCausalLM.from_pretrained(DIR).save_pretrained(OUT,'
        ' safe_serialization=True)')
  raise ConfigError(f'{hf_dir} has no {WEIGHTS_FILE}; pass a directory that'
                    ' save_pretrained(..., safe_serialization=True) wrote')


def _safetensors():
  try:
    import safetensors  # (only this file needs it)
    import safetensors.numpy
  except ImportError:
    raise ConfigError('jaxlm.interop.hf needs safetensors: pip install safetensors') from None
  return safetensors


class HFTensors(Mapping):
  """A HF directory's float32 tensors by name (no base-model prefix), each read when asked.

  Opened files are memory-mapped by safetensors; a tensor is read from disk
  only when looked up, so an import holds one layer's tensors at a time, not
  the whole model. `shapes` come from the file headers, without reading data.
  """

  def __init__(self, hf_dir: str, family: str):
    st = _safetensors()
    self._st, self._files, self._where, self.shapes = st, [], {}, {}
    for path in _weight_files(hf_dir):
      try:
        f = st.safe_open(path, framework='numpy')
        names = list(f.keys())
        shapes = [tuple(f.get_slice(n).get_shape()) for n in names]
      except (st.SafetensorError, OSError) as e:
        raise ConfigError(f'{path} is not a readable safetensors file ({e}); it is likely'
                          ' truncated or corrupt: download or save it again') from None
      self._files.append(f)
      for name, shape in zip(names, shapes):
        short = families.strip_prefix(name, family)
        if not families.is_buffer(short):
          self._where[short] = (f, name, path)
          self.shapes[short] = shape

  def __getitem__(self, short: str) -> np.ndarray:
    f, name, path = self._where[short]
    try:
      return np.asarray(f.get_tensor(name), np.float32)
    except TypeError as e:  # a dtype numpy lacks (bfloat16)
      raise ConfigError(f'{path} holds tensors numpy cannot read ({e}); re-save the model in'
                        ' float32 or float16') from None
    except (self._st.SafetensorError, OSError) as e:
      raise ConfigError(f'{path} is not a readable safetensors file ({e}); it is likely'
                        ' truncated or corrupt: download or save it again') from None

  def __iter__(self):
    return iter(self._where)

  def __len__(self) -> int:
    return len(self._where)

  def drop(self, short: str) -> None:
    """Leaves a tensor out (a tied lm_head that repeats the embedding)."""
    del self._where[short], self.shapes[short]


def _untie(tensors: HFTensors, m: ModelConfig, family: str, source: str) -> None:
  """Drops an lm_head that repeats the tied embedding; refuses one that differs."""
  embed = 'wte.weight' if family == 'gpt2' else 'embed_tokens.weight'
  if m.tie_embeddings and 'lm_head.weight' in tensors:
    if embed not in tensors or not np.array_equal(tensors['lm_head.weight'], tensors[embed]):
      raise ConfigError(f'{source}: lm_head.weight differs from {embed} although the config'
                        ' ties them; set tie_word_embeddings=false in its config.json')
    tensors.drop('lm_head.weight')


def check_tensors(shapes: Mapping[str, tuple[int, ...]], m: ModelConfig, family: str,
                  source: str) -> None:
  """Raises ConfigError unless the tensors' `shapes` are exactly the family's for model `m`."""
  expected = families.expected_shapes(m, family)
  unexpected = sorted(set(shapes) - set(expected))
  if unexpected:
    raise ConfigError(f'{source}: unexpected tensor {unexpected[0]}; not a plain {family}'
                      f' causal LM checkpoint with the layers of {CONFIG_FILE}')
  for name, shape in expected.items():
    if name not in shapes:
      raise ConfigError(f'{source}: tensor {name} is missing; the weights do not match'
                        f' {CONFIG_FILE}')
    if tuple(shapes[name]) != shape:
      raise ConfigError(f'{source}: tensor {name} has shape {tuple(shapes[name])},'
                        f' {CONFIG_FILE} implies {shape}')


def _check_param_tree(params, m: ModelConfig) -> None:
  # Guards the family table against changes of jaxlm/model/gpt.py's parameters.
  abstract = sharding.unbox_shapes(steps_lib.abstract_params(GPT(m), 1))
  ours = jax.tree.map(lambda x: tuple(x.shape), params)
  theirs = jax.tree.map(lambda x: tuple(x.shape), abstract)
  if ours != theirs:
    raise ValueError('jaxlm/model/gpt.py parameters no longer match'
                     ' jaxlm/interop/hf_families.py; update its mapping')


def gpt2_settings() -> ml_collections.ConfigDict:
  """GPT-2 small (124M) on lm1b: an import's run settings, the same as experiments/gpt2_124m.py."""
  c = ml_collections.ConfigDict()
  c.model = ml_collections.ConfigDict(dict(
      num_layers=12, num_heads=12, d_model=768, d_ff=3072, max_len=1024,
      dropout=0.0, dtype='bfloat16', vocab_size=50304, vocab_multiple=128, real_vocab_size=0,
      tie_embeddings=True, use_bias=True,
      attention='auto', scan_unroll=12,
  ))
  c.data = ml_collections.ConfigDict(dict(
      source='tfds', dataset='lm1b', text_key='text',
      train_split='train', eval_split='test', manual_dir='',
      tfds_data_dir='', train_files='', eval_files='',
      tokenizer='sentencepiece', vocab_size=50257, seq_len=1024,
      batch_size=512,
      # Data at scale (docs/data.md): a prepared folder, the raw-input cache, the
      # files' format, a given tokenizer file, document packing, the tokenizer's sample.
      dataset_dir='', cache_dir='', file_format='text', tokenizer_file='', pack=False,
      tokenizer_sample_mb=0,
  ))
  c.train = ml_collections.ConfigDict(dict(
      steps=20000, learning_rate=6e-4, min_lr_ratio=0.1, warmup_steps=700,
      weight_decay=0.1, beta1=0.9, beta2=0.95, adam_eps=1e-8, grad_clip=1.0,
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


def import_config(hf_dir: str, experiment: str | None = None, *, dtype: str | None = None,
                  vocab_multiple: int | None = None) -> Config:
  """The run config: gpt2_settings() (or an experiment file) with the HF architecture.

  dtype sets model.dtype, the compute dtype (default float32; parameters are float32).
  vocab_multiple (default: the settings' model.vocab_multiple) pads the vocabulary.
  """
  return _config_from(read_hf_config(hf_dir), hf_dir, experiment, dtype, vocab_multiple)


def hf_model(m: ModelConfig) -> ModelConfig:
  """The model as Hugging Face has it: the vocabulary without jaxlm's padding."""
  return dataclasses.replace(m, vocab_size=m.real_vocab, real_vocab_size=0)


def pad_vocab(params: dict, m: ModelConfig) -> dict:
  """HF-sized params with zero rows (wte) and columns (lm_head) up to m.vocab_size."""
  pad = m.vocab_size - m.real_vocab
  out = dict(params, wte=np.pad(params['wte'], ((0, pad), (0, 0))))
  if 'lm_head' in params:
    out['lm_head'] = np.pad(params['lm_head'], ((0, 0), (0, pad)))
  return out


def unpad_vocab(params: dict, m: ModelConfig) -> dict:
  """pad_vocab undone: the first m.real_vocab rows (wte) and columns (lm_head)."""
  out = dict(params, wte=params['wte'][:m.real_vocab])
  if 'lm_head' in params:
    out['lm_head'] = params['lm_head'][:, :m.real_vocab]
  return out


def _config_from(hf: dict, hf_dir: str, experiment: str | None, dtype: str | None,
                 vocab_multiple: int | None = None) -> Config:
  model = families.model_settings(hf, os.path.join(hf_dir, CONFIG_FILE))
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
                      f' {IMPORT_DTYPE})')
  if vocab_multiple is not None and vocab_multiple < 1:
    raise ConfigError(f'vocab_multiple={vocab_multiple} must be >= 1 (the model axis sizes'
                      ' that will split the vocabulary must divide it)')
  cd.model.update(model)
  cd.model.dtype = dtype or IMPORT_DTYPE
  if vocab_multiple is not None:
    cd.model.vocab_multiple = vocab_multiple
  multiple = cd.model.vocab_multiple
  cd.model.vocab_size = -(-model['vocab_size'] // multiple) * multiple
  cd.model.real_vocab_size = model['vocab_size']
  if os.path.exists(os.path.join(hf_dir, TOKENIZER_FILE)):
    cd.data.tokenizer = 'huggingface'  # the run folder's, from the import
  cd.data.vocab_size = model['vocab_size']  # a tokenizer trained later matches
  cd.data.seq_len = min(cd.data.seq_len, model['max_len'])
  return config_lib.from_configdict(cd)


def _plain_layout(c: Config) -> tuple[Config, jax.sharding.Mesh]:
  # One device, no pipeline: parameters in canonical layer order. Orbax
  # restores onto whatever layout a later run uses.
  p = dataclasses.replace(c.parallel, data=1, model=1, pipeline=1, zero_stage=0)
  c = dataclasses.replace(c, parallel=p)
  return c, sharding.make_mesh(p, jax.devices()[:1])


def _import_layout(c: Config) -> tuple[Config, jax.sharding.Mesh]:
  # ZeRO-3 over the local devices (as many as divide d_model), no pipeline:
  # parameters and optimizer state split, in canonical layer order. Orbax
  # restores onto whatever layout a later run uses.
  n = len(jax.local_devices())
  k = max(d for d in range(1, n + 1) if n % d == 0 and c.model.d_model % d == 0)
  p = dataclasses.replace(c.parallel, data=k, model=1, pipeline=1, zero_stage=3 if k > 1 else 0)
  layout = dataclasses.replace(c, parallel=p, data=dataclasses.replace(c.data, batch_size=k),
                               train=dataclasses.replace(c.train, grad_accum_steps=1))
  return layout, sharding.make_mesh(p, jax.local_devices()[:k])


def _put_params(tensors: HFTensors, m: ModelConfig, family: str, shardings) -> dict:
  """The params in their shardings, read from `tensors` one layer at a time.

  The top-level ones (embedding, final norm, output layer) first; then each
  layer's slice of the stacked [N, ...] leaves is written into arrays made on
  the devices, so host memory holds one layer, never the whole model.
  """
  theirs = hf_model(m)
  top = pad_vocab(families.top_params_from_hf(tensors, theirs, family), m)
  top = jax.device_put(top, {k: shardings[k] for k in top})
  block_shardings = shardings['stack']['blocks']
  abstract = sharding.unbox_shapes(steps_lib.abstract_params(GPT(m), 1))['stack']['blocks']
  blocks = jax.jit(lambda: jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), abstract),
                   out_shardings=block_shardings)()
  put = jax.jit(lambda full, part, i: jax.tree.map(
      lambda f, p: jax.lax.dynamic_update_slice_in_dim(f, p.astype(f.dtype), i, 0), full, part),
      donate_argnums=0, out_shardings=block_shardings)
  for i in range(m.num_layers):
    blocks = put(blocks, families.block_params_from_hf(tensors, theirs, family, [i]),
                 jnp.int32(i))
  return {**top, 'stack': {'blocks': blocks}}


def _refuse_existing(path: str, flag: str, what: str) -> None:
  p = epath.Path(path)
  if p.exists() and (not p.is_dir() or any(True for _ in p.iterdir())):
    raise ConfigError(f'--{flag}={path} already exists and is not empty; {what} never'
                      ' overwrites: pass a new folder')


def import_run(hf_dir: str, workdir: str, experiment: str | None = None, *,
              dtype: str | None = None, vocab_multiple: int | None = None) -> Config:
  """Writes a jaxlm run folder (config.json, checkpoint at step 0) from a HF directory.

  experiment: a file of the other run settings (default: gpt2_settings()).
  vocab_multiple: pads the vocabulary to a multiple (default: the settings', 128).
  """
  _refuse_existing(workdir, 'workdir', 'import')
  hf = read_hf_config(hf_dir)
  c = _config_from(hf, hf_dir, experiment, dtype, vocab_multiple)
  family = families.family_of(hf, hf_dir)
  theirs = hf_model(c.model)
  tensors = HFTensors(hf_dir, family)
  _untie(tensors, theirs, family, hf_dir)
  check_tensors(tensors.shapes, theirs, family, hf_dir)
  generation = _generation(hf_dir)
  tokenizer = _hf_tokenizer(hf_dir, hf, generation)

  layout, mesh = _import_layout(c)
  with sharding.activate(mesh):
    s = steps_lib.build(layout, mesh)
    params = _put_params(tensors, c.model, family, s.state_shardings.params)
    _check_param_tree(params, c.model)
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
  rundir.write_hf_source(workdir, {'config': hf, 'generation_config': generation})
  if tokenizer is not None:
    tokenizer.save(workdir)
  return c


def _hf_tokenizer(hf_dir: str, hf: dict, generation: dict | None):
  """The folder's tokenizer.json as a jaxlm tokenizer (EOS from the generation config)."""
  path = os.path.join(hf_dir, TOKENIZER_FILE)
  if not os.path.exists(path):
    return None
  from jaxlm.data.tokenizers import HuggingFaceTokenizer
  eos = (generation or {}).get('eos_token_id', hf.get('eos_token_id'))
  eos = eos[0] if isinstance(eos, list) and eos else eos
  with open(path, 'rb') as f:
    try:
      return HuggingFaceTokenizer(f.read(), eos if isinstance(eos, int) else None)
    except ConfigError as e:
      raise ConfigError(f'{path}: {e}') from None


def _generation(hf_dir: str) -> dict | None:
  path = os.path.join(hf_dir, GENERATION_FILE)
  try:
    with open(path) as f:
      generation = json.load(f)
  except (OSError, json.JSONDecodeError):
    return None  # optional: the config's own token ids are used instead
  return generation if isinstance(generation, dict) else None


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


def check_exportable(m: ModelConfig) -> str:
  """The HF family a run's model exports as; ConfigError if none computes the same."""
  return families.family_for(m)


def hf_tensors(params, m: ModelConfig) -> dict[str, np.ndarray]:
  """HF tensors (full names, as save_pretrained writes them) from jaxlm params."""
  p = unpad_vocab(jax.tree.map(lambda x: np.asarray(x, np.float32), jax.device_get(params)), m)
  return families.hf_from_params(p, hf_model(m), families.family_for(m))


def generation_config(config: dict, source: dict | None) -> dict:
  """generation_config.json: the source's, or the token ids its config.json names."""
  if source:
    return source
  ids = {k: config[k] for k in ('bos_token_id', 'eos_token_id', 'pad_token_id')
         if config.get(k) is not None}
  return {**ids, '_from_model_config': True}


def export_run(workdir: str, out_dir: str, step: int | None = None) -> Config:
  """Writes a run's checkpoint as a HF directory (config.json, model.safetensors, ...).

  The newest readable checkpoint by default, or `step`. The family is the one
  whose model computes the run's (GPT-2, Llama, or Qwen2 with q/k/v biases);
  an imported run keeps its source's model_type and settings.
  """
  st = _safetensors()
  _refuse_existing(out_dir, 'out_dir', 'export')
  if rundir.has_checkpoints(workdir):
    check_exportable(restore.read_config(workdir).model)  # before reading any weights
  source = rundir.read_hf_source(workdir) or {}
  c, params = read_run_params(workdir, step)
  family = families.family_for(c.model)
  imported = source.get('config') or {}
  if family == 'llama' and imported.get('model_type') == 'mistral':
    family = 'mistral'  # Mistral's model is Llama's; keep its name
  config = families.hf_config(hf_model(c.model), family, imported)
  tensors = hf_tensors(params, c.model)
  # Written next to out_dir and renamed into place: never a half-written directory.
  tmp = f'{out_dir.rstrip(os.sep)}.tmp{os.getpid()}'
  os.makedirs(tmp)
  try:
    with open(os.path.join(tmp, CONFIG_FILE), 'w') as f:
      json.dump(config, f, indent=2)
    with open(os.path.join(tmp, GENERATION_FILE), 'w') as f:
      json.dump(generation_config(config, source.get('generation_config')), f, indent=2)
    if rundir.has_tokenizer(workdir):
      spec, model_file = rundir.read_tokenizer(workdir)
      if spec.get('kind') in ('huggingface', 'bpe') and model_file:
        with open(os.path.join(tmp, TOKENIZER_FILE), 'wb') as f:
          f.write(model_file)  # the imported or trained tokenizer.json, byte for byte
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

  hf_dir = flags.DEFINE_string('hf_dir', None, 'import: Hugging Face model directory.')
  workdir = flags.DEFINE_string('workdir', None, 'jaxlm run folder (import makes a new one).')
  out_dir = flags.DEFINE_string('out_dir', None, 'export: new Hugging Face directory.')
  experiment = flags.DEFINE_string(
      'config', None, 'import: experiment file of the run settings (default: GPT-2 124M\'s,'
      f' as {EXPERIMENT}); the HF config sets the architecture.')
  dtype = flags.DEFINE_string('dtype', None, 'import: compute dtype (model.dtype), e.g.'
                              f' bfloat16; default: {IMPORT_DTYPE}.')
  vocab_multiple = flags.DEFINE_integer(
      'vocab_multiple', None, 'import: pad the vocabulary to a multiple of this (every model'
      ' axis size must divide it); default: the settings\' model.vocab_multiple, 128.')
  step = flags.DEFINE_integer('step', None,
                              'export: checkpoint step (default: the newest readable).')

  def run(command: str) -> str:
    if command == 'import':
      if not hf_dir.value or not workdir.value:
        raise ConfigError('import needs --hf_dir=DIR and --workdir=RUN')
      c = jaxlm.import_hf(hf_dir.value, workdir.value, dtype=dtype.value,
                          experiment=experiment.value, vocab_multiple=vocab_multiple.value)
      m = c.model
      return (f'imported {hf_dir.value} -> {workdir.value}: checkpoint at step 0,'
              f' {m.num_layers} layers, vocab {m.real_vocab} (padded to {m.vocab_size})')
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
