"""Typed run configuration.

Experiment files (`experiments/*.py`) return an ml_collections ConfigDict; it
is turned into these frozen dataclasses once, at the boundary, and checked
there. Every module takes the dataclasses, never the ConfigDict.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from typing import Any, Mapping


class ConfigError(ValueError):
  """A setting that cannot work; the message names the setting and the fix."""


class DataSource(enum.Enum):
  TFDS = 'tfds'
  FILES = 'files'


class TokenizerKind(enum.Enum):
  CHAR = 'char'
  BYTE = 'byte'
  SENTENCEPIECE = 'sentencepiece'
  # A Hugging Face tokenizer.json: data.tokenizer_file, or the one an import brings.
  HUGGINGFACE = 'huggingface'
  BPE = 'bpe'  # byte-level BPE (GPT-2's pre-tokenizer) trained on the corpus, data.vocab_size
  TIKTOKEN = 'tiktoken'  # a tiktoken ranks file, data.tokenizer_file (e.g. GPT-2's)


class FileFormat(enum.Enum):
  """How data.source=files holds its documents."""
  TEXT = 'text'  # one document a file
  LINES = 'lines'  # one document a line
  JSONL = 'jsonl'  # one JSON object a line; the document is its data.text_key field
  PARQUET = 'parquet'  # the data.text_key column (needs pyarrow)


class Schedule(enum.Enum):
  """How microbatches flow through the pipeline stages."""
  GPIPE = 'gpipe'  # each stage holds one contiguous chunk of layers
  CIRCULAR = 'circular'  # each stage holds pipeline_repeats non-adjacent chunks


class NonFinite(enum.Enum):
  """What a step whose loss or gradients are NaN/Inf does."""
  SKIP = 'skip'  # leave params and optimizer state as they were; count it; go on
  HALT = 'halt'  # stop with a checkpoint of the last good state


class NormKind(enum.Enum):
  LAYERNORM = 'layernorm'  # GPT-2: mean and variance, scale (and bias with use_bias)
  RMSNORM = 'rmsnorm'  # Llama: root mean square, scale only


class PositionKind(enum.Enum):
  LEARNED = 'learned'  # GPT-2: a learned table of max_len positions added to the tokens
  ROPE = 'rope'  # Llama: rotary embeddings of queries and keys


class MlpKind(enum.Enum):
  GELU = 'gelu'  # GPT-2: up, tanh-GELU, down
  SWIGLU = 'swiglu'  # Llama: down(silu(gate(x)) * up(x))


class Remat(enum.Enum):
  """What the backward pass recomputes instead of keeping from the forward."""
  NONE = 'none'  # keep every activation
  FULL = 'full'  # keep only each block's input; recompute the block
  MATMULS = 'matmuls'  # keep matmul outputs; recompute the cheap elementwise ops


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  num_layers: int
  num_heads: int
  d_model: int
  d_ff: int
  max_len: int
  dropout: float
  dtype: str  # compute dtype; parameters are always float32
  vocab_size: int  # 0: the tokenizer's size rounded up to vocab_multiple
  vocab_multiple: int
  tie_embeddings: bool
  use_bias: bool  # biases on every projection and norm (GPT-2)
  # The architecture options; the defaults are GPT-2's (older run folders lack them).
  norm: NormKind = NormKind.LAYERNORM
  norm_eps: float = 1e-5
  positions: PositionKind = PositionKind.LEARNED
  rope_theta: float = 10000.0
  # Llama 3.1's RoPE frequency scaling; rope_scaling=0 leaves the frequencies alone.
  rope_scaling: float = 0.0  # the factor (8 for Llama 3.1)
  rope_low_freq_factor: float = 1.0
  rope_high_freq_factor: float = 4.0
  rope_original_max_len: int = 8192
  mlp: MlpKind = MlpKind.GELU
  num_kv_heads: int = 0  # 0: num_heads (multi-head); fewer: grouped-query attention
  qkv_bias: bool = False  # biases on q, k and v even without use_bias (Qwen2)
  head_size: int = 0  # 0: d_model // num_heads
  # Rows of vocab_size that are tokens (0: all). An import pads its vocabulary to
  # vocab_multiple so that the model axis divides it; the padding's logits are masked.
  real_vocab_size: int = 0
  # How, not what, is computed (a checkpoint resumes under any value):
  attention: str = 'auto'  # auto: cuDNN fused attention on GPU where it applies; xla: einsums
  scan_unroll: int = 1  # layers per iteration of the layer loop (num_layers: straight-line code)
  remat: Remat = Remat.NONE  # set from parallel.remat

  @property
  def head_dim(self) -> int:
    return self.head_size or self.d_model // self.num_heads

  @property
  def kv_heads(self) -> int:
    return self.num_kv_heads or self.num_heads

  @property
  def real_vocab(self) -> int:
    """The token ids the model predicts: real_vocab_size, else all of vocab_size."""
    return self.real_vocab_size or self.vocab_size


@dataclasses.dataclass(frozen=True)
class DataConfig:
  source: DataSource
  dataset: str  # TFDS name, e.g. tiny_shakespeare or lm1b
  text_key: str  # TFDS feature holding the text
  train_split: str
  eval_split: str
  manual_dir: str  # TFDS DownloadConfig(manual_dir=...) for offline prepare
  tfds_data_dir: str  # '' = TFDS default (~/tensorflow_datasets)
  train_files: str  # glob, with source=files
  eval_files: str  # glob, with source=files
  tokenizer: TokenizerKind
  vocab_size: int  # sentencepiece and bpe (the vocabulary to train); others ignore it
  seq_len: int
  batch_size: int  # global, over all devices and processes
  # Data at scale (docs/data.md). Defaults keep older run folders loading.
  dataset_dir: str = ''  # a folder `python -m jaxlm.prepare` wrote; '' prepares into cache_dir
  cache_dir: str = ''  # where raw-text runs prepare, by fingerprint ('': ~/.cache/jaxlm/datasets)
  file_format: FileFormat = FileFormat.TEXT  # source=files: text, lines, jsonl or parquet
  tokenizer_file: str = ''  # huggingface: a tokenizer.json; tiktoken: a ranks file
  pack: bool = False  # whole documents packed into rows: attention and positions per document
  # sentencepiece and bpe learn from at most this many MB of the training text, taken
  # evenly across the corpus (0: 4 KB per vocabulary entry, at least 16 MB).
  tokenizer_sample_mb: int = 0


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  steps: int
  learning_rate: float
  min_lr_ratio: float  # cosine decays to learning_rate * min_lr_ratio
  warmup_steps: int
  weight_decay: float
  beta1: float
  beta2: float
  grad_clip: float  # 0 disables clipping
  grad_accum_steps: int
  seed: int
  log_every: int
  eval_every: int
  eval_steps: int
  checkpoint_every: int
  keep_checkpoints: int
  sample_prompt: str
  sample_tokens: int
  sample_temperature: float
  on_nonfinite: NonFinite
  spike_factor: float  # log a loss above this multiple of its running mean; 0: off
  adam_eps: float = 1e-8  # AdamW's epsilon (Llama's recipe: 1e-5)


@dataclasses.dataclass(frozen=True)
class ParallelConfig:
  data: int  # -1: all devices left over by the other axes
  model: int
  pipeline: int
  zero_stage: int  # 0 replicated, 1 +optimizer state, 2 +gradients, 3 +parameters over data
  remat: Remat
  microbatches: int  # pipeline only: each (accumulation) batch is split into this many
  pipeline_schedule: Schedule
  pipeline_repeats: int  # circular only: layer chunks per stage


@dataclasses.dataclass(frozen=True)
class ProfileConfig:
  """A jax.profiler trace of train steps start_step .. start_step+num_steps-1."""
  start_step: int  # the step from state.step == start_step (metrics.jsonl's start_step+1)
  num_steps: int  # 0: no trace


PROFILE_OFF = ProfileConfig(start_step=0, num_steps=0)


# --- Classification fine-tuning: its data and classifier sections -----------


class LabelledSource(enum.Enum):
  """Where a classification run reads labelled texts."""
  CSV = 'csv'  # local CSV files
  TFDS = 'tfds'  # a TFDS dataset with a ClassLabel feature


class Truncation(enum.Enum):
  """Which tokens a text longer than data.max_length keeps."""
  KEEP_START = 'keep_start'
  KEEP_END = 'keep_end'


class Pooling(enum.Enum):
  """How the classifier summarises the final hidden states of a text."""
  LAST = 'last'  # the last real token (with causal attention it has seen them all)
  MEAN = 'mean'  # the mean over the real tokens




@dataclasses.dataclass(frozen=True)
class LabelledDataConfig:
  """The data section of a classification run: labelled texts from CSV or TFDS."""
  source: LabelledSource
  # csv: comma-separated paths. The eval split is a class-stratified
  # `eval_holdout` fraction of eval_files (of train_files when eval_files is
  # ''); the rest of eval_files joins the training examples.
  train_files: str
  eval_files: str
  eval_holdout: float
  csv_label_column: int  # 0-based columns; files have no header unless csv_skip_header
  csv_text_columns: tuple[int, ...]  # joined with '\n'
  csv_labels: tuple[str, ...]  # the label values in the file, in class order
  csv_skip_header: bool
  # tfds: the same holdout rule over train_split / eval_split.
  tfds_dataset: str
  tfds_text_keys: tuple[str, ...]
  tfds_label_key: str
  tfds_data_dir: str  # '' = TFDS default (~/tensorflow_datasets)
  train_split: str
  eval_split: str
  class_names: tuple[str, ...]
  tokenizer: TokenizerKind
  vocab_size: int  # sentencepiece and bpe (the vocabulary to train); others ignore it
  max_length: int  # tokens per text, after truncation
  truncation: Truncation
  batch_size: int  # global, over all devices and processes




@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
  pooling: Pooling
  init_from: str  # a jaxlm pretraining run folder, or '' for random initialisation


@dataclasses.dataclass(frozen=True)
class Config:
  model: ModelConfig
  data: DataConfig
  train: TrainConfig
  parallel: ParallelConfig
  # Optional: run folders and checkpoints written before profiling existed have
  # no profile section, and a trace never changes what a run computes.
  profile: ProfileConfig = PROFILE_OFF
  # Fine-tuning a classifier (jaxlm/tasks/classify.py): its own section, and
  # `data` is then a jaxlm.tasks.classify_config.LabelledDataConfig.
  classifier: Any = None

  @property
  def task(self) -> str:
    """The task the config trains: 'lm' (pretraining) or 'classify'."""
    return 'lm' if self.classifier is None else 'classify'


_DTYPES = ('float32', 'bfloat16', 'float16')


# Fields set from other settings, never written in an experiment.
DERIVED = {'ModelConfig': {'remat'}}  # model.remat is a copy of parallel.remat
# Model settings that change how the model is computed, not what: a checkpoint
# restores under any value of them. (dtype is the compute dtype; parameters
# and optimizer state are float32 whatever it is, so an import computed in
# float32 resumes under an experiment's bfloat16.)
EXECUTION_ONLY = ('attention', 'scan_unroll', 'remat', 'dtype')
_ATTENTION = ('auto', 'xla')


def section(cls, raw: Mapping[str, Any], name: str, defaults: Mapping[str, Any] = ()):
  """One checked dataclass from a dict: unknown or missing keys and bad enum values named.

  Fields with a default are optional (older run folders lack them); `defaults`
  fills fields a kind of experiment may leave out. DERIVED fields are never set.
  """
  derived = DERIVED.get(cls.__name__, set())
  fields = [f.name for f in dataclasses.fields(cls) if f.name not in derived]
  required = [f.name for f in dataclasses.fields(cls)
              if f.default is dataclasses.MISSING and f.name not in derived]
  unknown = set(raw) - set(fields)
  if unknown:
    raise ConfigError(
        f'unknown setting(s) {", ".join(f"{name}.{k}" for k in sorted(unknown))};'
        f' known: {", ".join(sorted(fields))}')
  values = {k: defaults[k] for k in fields if k in defaults}
  values.update(raw)
  missing = [k for k in required if k not in values]
  if missing:
    raise ConfigError(
        f'missing setting(s) {", ".join(f"{name}.{k}" for k in sorted(missing))};'
        ' add them to the experiment config')
  hints = typing.get_type_hints(cls)
  return cls(**{k: _convert(hints[k], name, k, values[k]) for k in fields if k in values})


def _convert(hint, name: str, key: str, value):
  if isinstance(hint, type) and issubclass(hint, enum.Enum):
    if isinstance(value, hint):
      return value
    try:
      return hint(value)
    except ValueError:
      choices = ', '.join(m.value for m in hint)
      raise ConfigError(f'{name}.{key}={value!r} is not one of: {choices}') from None
  if typing.get_origin(hint) is tuple:
    return tuple(value)
  return value


# Settings a classification experiment may leave out (pretraining sets them all).
CLASSIFY_DEFAULTS = {
    'train': {'grad_accum_steps': 1, 'eval_steps': 1, 'sample_prompt': '', 'sample_tokens': 0,
              'sample_temperature': 1.0, 'on_nonfinite': 'skip', 'spike_factor': 0.0},
    'parallel': {'data': -1, 'model': 1, 'pipeline': 1, 'zero_stage': 0, 'remat': 'none',
                 'microbatches': 1, 'pipeline_schedule': 'gpipe', 'pipeline_repeats': 1},
}


def from_configdict(cd) -> Config:
  """Turns an experiment's ConfigDict (any task) into a checked, frozen Config.

  A `classifier` section makes it a classification run (its `data` section is
  then a LabelledDataConfig); otherwise it is pretraining.
  """
  raw = cd.to_dict() if hasattr(cd, 'to_dict') else dict(cd)
  classify = 'classifier' in raw
  expected = {'model', 'data', 'train', 'parallel'} | ({'classifier'} if classify else set())
  optional = {'profile'}  # see Config.profile
  if not expected <= set(raw) <= expected | optional:
    extra = ', '.join(sorted((set(raw) - optional) ^ expected))
    raise ConfigError(f'config sections must be {sorted(expected)}, optionally'
                      f' {sorted(optional)}; got extra/missing: {extra}')
  defaults = CLASSIFY_DEFAULTS if classify else {}
  parallel = section(ParallelConfig, raw['parallel'], 'parallel', defaults.get('parallel', {}))
  config = Config(
      model=dataclasses.replace(section(ModelConfig, raw['model'], 'model'),
                                remat=parallel.remat),
      data=section(LabelledDataConfig if classify else DataConfig, raw['data'], 'data'),
      train=section(TrainConfig, raw['train'], 'train', defaults.get('train', {})),
      parallel=parallel,
      profile=(section(ProfileConfig, raw['profile'], 'profile') if 'profile' in raw
               else PROFILE_OFF),
      classifier=section(ClassifierConfig, raw['classifier'], 'classifier') if classify else None,
  )
  (validate_classify if classify else validate)(config)
  return config


def validate(c: Config) -> None:
  """Checks a pretraining config without devices or data; raises ConfigError."""
  m, d, t, p = c.model, c.data, c.train, c.parallel
  validate_model(m)
  validate_train(t)
  validate_parallel(p)
  for name, value in {'data.seq_len': d.seq_len, 'data.batch_size': d.batch_size}.items():
    if value <= 0:
      raise ConfigError(f'{name}={value} must be a positive integer')
  if d.seq_len > m.max_len:
    raise ConfigError(
        f'data.seq_len={d.seq_len} exceeds model.max_len={m.max_len};'
        ' raise model.max_len or lower data.seq_len')
  if d.source is DataSource.FILES and not d.train_files:
    raise ConfigError('data.source=files needs data.train_files=GLOB (text files)')
  if d.source is DataSource.TFDS and not d.dataset:
    raise ConfigError('data.source=tfds needs data.dataset=NAME, e.g. tiny_shakespeare')
  validate_tokenizer(d.tokenizer, d.vocab_size, d.tokenizer_file)
  validate_tokenizer_sample(d.tokenizer_sample_mb)
  validate_batch(c, d.batch_size)


BPE_MIN_VOCAB = 257  # the 256 bytes and <|endoftext|>


def validate_tokenizer(kind: TokenizerKind, vocab_size: int, tokenizer_file: str) -> None:
  """Checks data.tokenizer against data.vocab_size and data.tokenizer_file (no files read)."""
  if kind is TokenizerKind.SENTENCEPIECE and vocab_size <= 0:
    raise ConfigError('data.tokenizer=sentencepiece needs data.vocab_size > 0, e.g. 8000')
  if kind is TokenizerKind.BPE and vocab_size < BPE_MIN_VOCAB:
    raise ConfigError(f'data.tokenizer=bpe needs data.vocab_size >= {BPE_MIN_VOCAB} (the 256'
                      f' bytes and <|endoftext|>), not {vocab_size}; e.g. 8192 (GPT-2: 50257)')
  if kind is TokenizerKind.TIKTOKEN and not tokenizer_file:
    raise ConfigError('data.tokenizer=tiktoken needs data.tokenizer_file=PATH, a tiktoken ranks'
                      ' file such as GPT-2\'s r50k_base.tiktoken (nothing is downloaded)')
  if tokenizer_file and kind not in (TokenizerKind.HUGGINGFACE, TokenizerKind.TIKTOKEN):
    raise ConfigError(f'data.tokenizer_file={tokenizer_file} is read only with'
                      ' data.tokenizer=huggingface or tiktoken, not'
                      f' {kind.value}; drop data.tokenizer_file or change data.tokenizer')


def validate_tokenizer_sample(sample_mb: int) -> None:
  """Checks data.tokenizer_sample_mb, the text a trained tokenizer learns from."""
  if sample_mb < 0:
    raise ConfigError(f'data.tokenizer_sample_mb={sample_mb} must be 0 (4 KB per vocabulary'
                      ' entry) or a number of MB')


def validate_batch(c: Config, batch_size: int) -> None:
  """Checks the batch against accumulation and pipeline microbatches (any task)."""
  m, t, p = c.model, c.train, c.parallel
  if batch_size % t.grad_accum_steps:
    raise ConfigError(
        f'train.grad_accum_steps={t.grad_accum_steps} does not divide'
        f' data.batch_size={batch_size}; pick a divisor of the batch size')
  if p.pipeline != 1:
    micro = batch_size // t.grad_accum_steps
    if micro % p.microbatches:
      raise ConfigError(
          f'parallel.microbatches={p.microbatches} does not divide the batch of {micro}'
          f' rows (data.batch_size / train.grad_accum_steps); pick a divisor of {micro}')
    if p.pipeline > 0 and m.num_layers % (p.pipeline * p.pipeline_repeats):
      raise ConfigError(
          f'model.num_layers={m.num_layers} does not split into parallel.pipeline='
          f'{p.pipeline} stages x parallel.pipeline_repeats={p.pipeline_repeats} chunks;'
          ' pick sizes whose product divides num_layers')
    if p.pipeline_repeats > 1 and p.pipeline > 0 and p.microbatches < p.pipeline:
      raise ConfigError(
          f'parallel.microbatches={p.microbatches} is fewer than the {p.pipeline} stages;'
          ' the circular schedule needs microbatches >= parallel.pipeline')
  _validate_profile(c.profile, t.steps)


def validate_model(m: ModelConfig, where: str = '') -> None:
  """The model-shape checks; `where` names a source other than the experiment (a file)."""
  at = f'{where}: ' if where else ''
  for key in ('num_layers', 'num_heads', 'd_model', 'd_ff', 'max_len', 'vocab_multiple'):
    if getattr(m, key) <= 0:
      raise ConfigError(f'{at}model.{key}={getattr(m, key)} must be a positive integer')
  if m.head_size < 0:
    raise ConfigError(f'{at}model.head_size={m.head_size} must be >= 0 (0: d_model // num_heads)')
  if not m.head_size and m.d_model % m.num_heads:
    raise ConfigError(
        f'{at}model.num_heads={m.num_heads} does not divide model.d_model={m.d_model};'
        ' pick num_heads among the divisors of d_model, or set model.head_size')
  if m.num_kv_heads < 0 or m.num_kv_heads > m.num_heads or (
      m.num_kv_heads and m.num_heads % m.num_kv_heads):
    raise ConfigError(
        f'{at}model.num_kv_heads={m.num_kv_heads} does not divide model.num_heads='
        f'{m.num_heads}; pick a divisor of num_heads (0: num_heads, multi-head attention)')
  if m.positions is PositionKind.ROPE and m.head_dim % 2:
    raise ConfigError(
        f'{at}model.positions=rope needs an even head dimension, not {m.head_dim}'
        ' (d_model // num_heads, or model.head_size); change num_heads or head_size')
  if m.rope_theta <= 0 or m.rope_scaling < 0 or m.norm_eps <= 0:
    raise ConfigError(f'{at}model.rope_theta={m.rope_theta}, model.rope_scaling='
                      f'{m.rope_scaling} and model.norm_eps={m.norm_eps} must be positive'
                      ' (rope_scaling=0: off)')
  if m.rope_scaling and not (0 < m.rope_low_freq_factor < m.rope_high_freq_factor
                             and m.rope_original_max_len > 0):
    raise ConfigError(
        f'{at}model.rope_scaling={m.rope_scaling} needs 0 < model.rope_low_freq_factor'
        f' ({m.rope_low_freq_factor}) < model.rope_high_freq_factor'
        f' ({m.rope_high_freq_factor}) and model.rope_original_max_len > 0'
        ' (Llama 3.1: 1, 4, 8192)')
  if not 0.0 <= m.dropout < 1.0:
    raise ConfigError(f'{at}model.dropout={m.dropout} must be in [0, 1)')
  if m.dtype not in _DTYPES:
    raise ConfigError(f'{at}model.dtype={m.dtype!r} is not one of: {", ".join(_DTYPES)}')
  if m.vocab_size < 0:
    raise ConfigError(
        f'{at}model.vocab_size={m.vocab_size} must be >= 0 (0: from the tokenizer)')
  if m.real_vocab_size < 0 or (m.vocab_size and m.real_vocab_size > m.vocab_size):
    raise ConfigError(
        f'{at}model.real_vocab_size={m.real_vocab_size} must be in [0, model.vocab_size='
        f'{m.vocab_size}] (0: every row is a token)')
  if m.attention not in _ATTENTION:
    raise ConfigError(
        f'{at}model.attention={m.attention!r} is not one of: {", ".join(_ATTENTION)}')
  if m.scan_unroll < 1:
    raise ConfigError(
        f'{at}model.scan_unroll={m.scan_unroll} must be >= 1 (1: a loop over the layers;'
        f' model.num_layers={m.num_layers}: straight-line code, no loop)')


def validate_train(t: TrainConfig) -> None:
  """The optimizer, schedule, interval and health checks of any task."""
  positive = {
      'train.steps': t.steps, 'train.grad_accum_steps': t.grad_accum_steps,
      'train.log_every': t.log_every, 'train.eval_every': t.eval_every,
      'train.eval_steps': t.eval_steps, 'train.checkpoint_every': t.checkpoint_every,
      'train.keep_checkpoints': t.keep_checkpoints,
  }
  for name, value in positive.items():
    if value <= 0:
      raise ConfigError(f'{name}={value} must be a positive integer')
  if not 0.0 <= t.min_lr_ratio <= 1.0:
    raise ConfigError(f'train.min_lr_ratio={t.min_lr_ratio} must be in [0, 1]')
  if t.warmup_steps < 0 or t.warmup_steps > t.steps:
    raise ConfigError(
        f'train.warmup_steps={t.warmup_steps} must be in [0, train.steps={t.steps}]')
  if t.learning_rate <= 0:
    raise ConfigError(f'train.learning_rate={t.learning_rate} must be > 0')
  if t.spike_factor != 0 and t.spike_factor <= 1:
    raise ConfigError(
        f'train.spike_factor={t.spike_factor} must be > 1 (a multiple of the running'
        ' mean loss) or 0 to turn spike logging off')
  if t.grad_clip < 0:
    raise ConfigError(f'train.grad_clip={t.grad_clip} must be >= 0 (0 disables)')
  for name, beta in (('train.beta1', t.beta1), ('train.beta2', t.beta2)):
    if not 0.0 <= beta < 1.0:
      raise ConfigError(f'{name}={beta} must be in [0, 1) (AdamW: 0.9 and 0.95 or 0.99)')
  if t.adam_eps <= 0:
    raise ConfigError(f'train.adam_eps={t.adam_eps} must be > 0 (1e-8; Llama recipes 1e-5)')


def validate_parallel(p: ParallelConfig) -> None:
  """The mesh-size, ZeRO and pipeline-schedule checks of any task."""
  for name, value in (('parallel.data', p.data), ('parallel.model', p.model),
                      ('parallel.pipeline', p.pipeline)):
    if value == 0 or value < -1:
      raise ConfigError(f'{name}={value} must be a positive size or -1 (fill)')
  if p.zero_stage not in (0, 1, 2, 3):
    raise ConfigError(f'parallel.zero_stage={p.zero_stage} must be 0, 1, 2 or 3')
  if [p.data, p.model, p.pipeline].count(-1) > 1:
    raise ConfigError('only one of parallel.data/model/pipeline may be -1 (fill)')
  if p.microbatches <= 0 or p.pipeline_repeats <= 0:
    raise ConfigError(
        f'parallel.microbatches={p.microbatches} and parallel.pipeline_repeats='
        f'{p.pipeline_repeats} must be positive integers')
  if p.pipeline_schedule is Schedule.GPIPE and p.pipeline_repeats != 1:
    raise ConfigError(
        f'parallel.pipeline_repeats={p.pipeline_repeats} needs'
        ' parallel.pipeline_schedule=circular; gpipe holds one chunk per stage (repeats=1)')


def validate_classify(c: Config) -> None:
  """Checks a classification config without devices or data; raises ConfigError."""
  m, d, p = c.model, c.data, c.parallel
  validate_model(m)
  validate_train(c.train)
  validate_parallel(p)
  for name, value in {'data.max_length': d.max_length, 'data.batch_size': d.batch_size}.items():
    if value <= 0:
      raise ConfigError(f'{name}={value} must be a positive integer')
  if not 0.0 < d.eval_holdout <= 1.0:
    raise ConfigError(f'data.eval_holdout={d.eval_holdout} must be in (0, 1]')
  if len(d.class_names) < 2 or len(set(d.class_names)) != len(d.class_names):
    raise ConfigError(f'data.class_names={d.class_names} must name two or more distinct classes')
  if d.source is LabelledSource.CSV:
    _validate_csv(d)
  else:
    _validate_tfds(d)
  if not c.classifier.init_from:  # (with it, the tokenizer is init_from's)
    if d.tokenizer is TokenizerKind.TIKTOKEN:  # classification data has no tokenizer_file
      raise ConfigError('data.tokenizer=tiktoken in fine-tuning reuses the tokenizer of'
                        ' classifier.init_from; set it to a run trained with tiktoken, or pick'
                        ' byte, char, sentencepiece or bpe')
    validate_tokenizer(d.tokenizer, d.vocab_size, '')
  if not c.classifier.init_from and d.max_length > m.max_len:
    raise ConfigError(
        f'data.max_length={d.max_length} exceeds model.max_len={m.max_len};'
        ' raise model.max_len or lower data.max_length')
  if p.pipeline != 1:
    raise ConfigError(f'parallel.pipeline={p.pipeline}: fine-tuning runs on the data and'
                      ' model axes only; set parallel.pipeline=1')
  validate_batch(c, d.batch_size)


def _validate_csv(d: LabelledDataConfig) -> None:
  if not split_paths(d.train_files):
    raise ConfigError('data.source=csv needs data.train_files=PATH[,PATH...] (CSV files)')
  if not d.eval_files and d.eval_holdout == 1.0:
    raise ConfigError('data.eval_holdout=1.0 with data.eval_files=\'\' leaves nothing to'
                      ' train on; hold out less, or set data.eval_files')
  if not d.csv_text_columns:
    raise ConfigError('data.csv_text_columns is empty; name the text column(s), e.g. (1, 2)')
  columns = (d.csv_label_column,) + d.csv_text_columns
  if min(columns) < 0:
    raise ConfigError(f'data.csv_label_column/csv_text_columns={columns} must be >= 0'
                      ' (0-based column numbers)')
  if d.csv_label_column in d.csv_text_columns:
    raise ConfigError(f'data.csv_label_column={d.csv_label_column} is also a text column;'
                      ' remove it from data.csv_text_columns')
  if len(d.csv_labels) != len(d.class_names) or len(set(d.csv_labels)) != len(d.csv_labels):
    raise ConfigError(
        f'data.csv_labels={d.csv_labels} must be {len(d.class_names)} distinct values, one'
        f' per entry of data.class_names={d.class_names}')


def _validate_tfds(d: LabelledDataConfig) -> None:
  if not d.tfds_dataset:
    raise ConfigError('data.source=tfds needs data.tfds_dataset=NAME, e.g. ag_news_subset')
  if not d.tfds_text_keys:
    raise ConfigError('data.tfds_text_keys is empty; name the text feature(s),'
                      ' e.g. (\'title\', \'description\')')
  if not d.train_split:
    raise ConfigError('data.source=tfds needs data.train_split, e.g. train')
  if not d.eval_split and d.eval_holdout == 1.0:
    raise ConfigError('data.eval_holdout=1.0 with data.eval_split=\'\' leaves nothing to'
                      ' train on; hold out less, or set data.eval_split')


def split_paths(paths: str) -> list[str]:
  """'a.csv, b.csv' -> ['a.csv', 'b.csv']."""
  return [p.strip() for p in paths.split(',') if p.strip()]


def _validate_profile(pr: ProfileConfig, steps: int) -> None:
  if pr.start_step < 0:
    raise ConfigError(f'profile.start_step={pr.start_step} must be >= 0 (the first traced step)')
  if pr.num_steps < 0:
    raise ConfigError(f'profile.num_steps={pr.num_steps} must be >= 0 (0 turns profiling off)')
  if pr.num_steps and pr.start_step + pr.num_steps > steps:
    raise ConfigError(
        f'profile.start_step={pr.start_step} + profile.num_steps={pr.num_steps} runs past'
        f' train.steps={steps}; lower profile.start_step, or set profile.num_steps=0 to'
        ' turn profiling off')


def _json_value(v):
  if isinstance(v, enum.Enum):
    return v.value
  return list(v) if isinstance(v, tuple) else v


def to_dict(c: Config) -> dict:
  """A JSON-ready dict (enums as values, tuples as lists), e.g. for the run folder."""
  out = {f.name: {k: _json_value(v) for k, v in dataclasses.asdict(getattr(c, f.name)).items()}
         for f in dataclasses.fields(c) if getattr(c, f.name) is not None}
  del out['model']['remat']  # a copy of parallel.remat
  return out


def defaults(cls) -> dict:
  """A section's optional settings and their defaults, as to_dict writes them."""
  return {f.name: _json_value(f.default) for f in dataclasses.fields(cls)
          if f.default is not dataclasses.MISSING}


def resolve_vocab(c: Config, tokenizer_vocab: int) -> Config:
  """Fills model.vocab_size from the tokenizer (rounded up) or checks it."""
  m = c.model
  if m.real_vocab_size and m.real_vocab_size < tokenizer_vocab:
    raise ConfigError(
        f'model.real_vocab_size={m.real_vocab_size} is smaller than the tokenizer\'s'
        f' {tokenizer_vocab}; set it to {tokenizer_vocab} (or 0 to predict every row)')
  if m.vocab_size == 0:
    size = -(-tokenizer_vocab // m.vocab_multiple) * m.vocab_multiple
    return dataclasses.replace(c, model=dataclasses.replace(m, vocab_size=size))
  if m.vocab_size < tokenizer_vocab:
    raise ConfigError(
        f'model.vocab_size={m.vocab_size} is smaller than the tokenizer\'s'
        f' {tokenizer_vocab}; set model.vocab_size=0 to size it automatically')
  return c


SYNTHETIC_VOCAB = 256  # tools without a tokenizer (planner, benchmarks)
