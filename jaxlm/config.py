"""Typed run configuration.

Experiment files (`experiments/*.py`) return an ml_collections ConfigDict; it
is turned into these frozen dataclasses once, at the boundary, and checked
there. Every module takes the dataclasses, never the ConfigDict.
"""

from __future__ import annotations

import dataclasses
import enum
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


class Schedule(enum.Enum):
  """How microbatches flow through the pipeline stages."""
  GPIPE = 'gpipe'  # each stage holds one contiguous chunk of layers
  CIRCULAR = 'circular'  # each stage holds pipeline_repeats non-adjacent chunks


class NonFinite(enum.Enum):
  """What a step whose loss or gradients are NaN/Inf does."""
  SKIP = 'skip'  # leave params and optimizer state as they were; count it; go on
  HALT = 'halt'  # stop with a checkpoint of the last good state


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
  use_bias: bool
  # How, not what, is computed (a checkpoint resumes under any value):
  attention: str = 'auto'  # auto: cuDNN fused attention on GPU where it applies; xla: einsums
  scan_unroll: int = 1  # layers per iteration of the layer loop (num_layers: straight-line code)
  remat: Remat = Remat.NONE  # set from parallel.remat

  @property
  def head_dim(self) -> int:
    return self.d_model // self.num_heads


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
  vocab_size: int  # sentencepiece only
  seq_len: int
  batch_size: int  # global, over all devices and processes


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


@dataclasses.dataclass(frozen=True)
class Config:
  model: ModelConfig
  data: DataConfig
  train: TrainConfig
  parallel: ParallelConfig
  # Optional: run folders and checkpoints written before profiling existed have
  # no profile section, and a trace never changes what a run computes.
  profile: ProfileConfig = PROFILE_OFF


_DTYPES = ('float32', 'bfloat16', 'float16')


# Fields set from other settings, never written in an experiment.
DERIVED = {'ModelConfig': {'remat'}}  # model.remat is a copy of parallel.remat
# Model settings that change how the model is computed, not what: a checkpoint
# restores under any value of them.
EXECUTION_ONLY = ('attention', 'scan_unroll', 'remat')
_ATTENTION = ('auto', 'xla')


def _section(cls, raw: Mapping[str, Any], name: str, **converters):
  # Fields with defaults are optional settings (older run folders lack them).
  all_fields = {f.name for f in dataclasses.fields(cls)} - DERIVED.get(cls.__name__, set())
  fields = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
  unknown = set(raw) - all_fields
  missing = fields - set(raw)
  if unknown:
    raise ConfigError(
        f'unknown setting(s) {", ".join(f"{name}.{k}" for k in sorted(unknown))};'
        f' known: {", ".join(sorted(all_fields))}')
  if missing:
    raise ConfigError(
        f'missing setting(s) {", ".join(f"{name}.{k}" for k in sorted(missing))};'
        ' add them to the experiment config')
  values = dict(raw)
  for key, convert in converters.items():
    try:
      values[key] = convert(values[key])
    except ValueError:
      choices = ', '.join(m.value for m in convert)  # converters are enums
      raise ConfigError(
          f'{name}.{key}={values[key]!r} is not one of: {choices}') from None
  return cls(**values)


def from_configdict(cd) -> Config:
  """Turns an experiment's ConfigDict into a checked, frozen Config."""
  raw = cd.to_dict() if hasattr(cd, 'to_dict') else dict(cd)
  expected = {'model', 'data', 'train', 'parallel'}
  optional = {'profile'}  # see Config.profile
  if not expected <= set(raw) <= expected | optional:
    extra = ', '.join(sorted((set(raw) - optional) ^ expected))
    raise ConfigError(f'config sections must be {sorted(expected)}, optionally'
                      f' {sorted(optional)}; got extra/missing: {extra}')
  config = Config(
      model=_section(ModelConfig, raw['model'], 'model'),
      data=_section(DataConfig, raw['data'], 'data',
                    source=DataSource, tokenizer=TokenizerKind),
      train=_section(TrainConfig, raw['train'], 'train', on_nonfinite=NonFinite),
      parallel=_section(ParallelConfig, raw['parallel'], 'parallel', remat=Remat,
                        pipeline_schedule=Schedule),
      profile=(_section(ProfileConfig, raw['profile'], 'profile') if 'profile' in raw
               else PROFILE_OFF),
  )
  config = dataclasses.replace(
      config, model=dataclasses.replace(config.model, remat=config.parallel.remat))
  validate(config)
  return config


def validate(c: Config) -> None:
  """Checks what can be checked without devices or data; raises ConfigError."""
  m, d, t, p = c.model, c.data, c.train, c.parallel
  positive = {
      'model.num_layers': m.num_layers, 'model.num_heads': m.num_heads,
      'model.d_model': m.d_model, 'model.d_ff': m.d_ff,
      'model.max_len': m.max_len, 'model.vocab_multiple': m.vocab_multiple,
      'data.seq_len': d.seq_len, 'data.batch_size': d.batch_size,
      'train.steps': t.steps, 'train.grad_accum_steps': t.grad_accum_steps,
      'train.log_every': t.log_every, 'train.eval_every': t.eval_every,
      'train.eval_steps': t.eval_steps,
      'train.checkpoint_every': t.checkpoint_every,
      'train.keep_checkpoints': t.keep_checkpoints,
  }
  for name, value in positive.items():
    if value <= 0:
      raise ConfigError(f'{name}={value} must be a positive integer')
  if m.d_model % m.num_heads:
    raise ConfigError(
        f'model.num_heads={m.num_heads} does not divide model.d_model={m.d_model};'
        ' pick num_heads among the divisors of d_model')
  if not 0.0 <= m.dropout < 1.0:
    raise ConfigError(f'model.dropout={m.dropout} must be in [0, 1)')
  if m.dtype not in _DTYPES:
    raise ConfigError(f'model.dtype={m.dtype!r} is not one of: {", ".join(_DTYPES)}')
  if m.vocab_size < 0:
    raise ConfigError(f'model.vocab_size={m.vocab_size} must be >= 0 (0: from the tokenizer)')
  if m.attention not in _ATTENTION:
    raise ConfigError(f'model.attention={m.attention!r} is not one of: {", ".join(_ATTENTION)}')
  if m.scan_unroll < 1:
    raise ConfigError(
        f'model.scan_unroll={m.scan_unroll} must be >= 1 (1: a loop over the layers;'
        f' model.num_layers={m.num_layers}: straight-line code, no loop)')
  if d.seq_len > m.max_len:
    raise ConfigError(
        f'data.seq_len={d.seq_len} exceeds model.max_len={m.max_len};'
        ' raise model.max_len or lower data.seq_len')
  if d.batch_size % t.grad_accum_steps:
    raise ConfigError(
        f'train.grad_accum_steps={t.grad_accum_steps} does not divide'
        f' data.batch_size={d.batch_size}; pick a divisor of the batch size')
  if d.source is DataSource.FILES and not d.train_files:
    raise ConfigError('data.source=files needs data.train_files=GLOB (text files)')
  if d.source is DataSource.TFDS and not d.dataset:
    raise ConfigError('data.source=tfds needs data.dataset=NAME, e.g. tiny_shakespeare')
  if d.tokenizer is TokenizerKind.SENTENCEPIECE and d.vocab_size <= 0:
    raise ConfigError('data.tokenizer=sentencepiece needs data.vocab_size > 0, e.g. 8000')
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
  if p.pipeline != 1:
    micro = d.batch_size // t.grad_accum_steps
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


def to_dict(c: Config) -> dict:
  """A JSON-ready dict (enums as their values), e.g. for the run folder."""
  def convert(v):
    return v.value if isinstance(v, enum.Enum) else v
  out = {
      section: {k: convert(v) for k, v in dataclasses.asdict(getattr(c, section)).items()}
      for section in ('model', 'data', 'train', 'parallel', 'profile')
  }
  del out['model']['remat']  # a copy of parallel.remat
  return out


def resolve_vocab(c: Config, tokenizer_vocab: int) -> Config:
  """Fills model.vocab_size from the tokenizer (rounded up) or checks it."""
  m = c.model
  if m.vocab_size == 0:
    size = -(-tokenizer_vocab // m.vocab_multiple) * m.vocab_multiple
    return dataclasses.replace(c, model=dataclasses.replace(m, vocab_size=size))
  if m.vocab_size < tokenizer_vocab:
    raise ConfigError(
        f'model.vocab_size={m.vocab_size} is smaller than the tokenizer\'s'
        f' {tokenizer_vocab}; set model.vocab_size=0 to size it automatically')
  return c


SYNTHETIC_VOCAB = 256  # tools without a tokenizer (planner, benchmarks)
