"""Typed configuration of a classification fine-tuning run.

`experiments/*_classifier.py` return an ml_collections ConfigDict with the
sections model, data, classifier, train and parallel; `from_configdict` turns
it into the frozen dataclasses below once, at the boundary, and checks it.
`model` and `parallel` are jaxlm's own `ModelConfig` and `ParallelConfig`, so
a pretrained run's model section drops in.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from typing import Any, Mapping

from jaxlm import config as config_lib
from jaxlm.config import ConfigError, ModelConfig, ParallelConfig, TokenizerKind

_DTYPES = ('float32', 'bfloat16', 'float16')


class Source(enum.Enum):
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
class DataConfig:
  source: Source
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
  vocab_size: int  # sentencepiece only
  max_length: int  # tokens per text, after truncation
  truncation: Truncation
  batch_size: int  # global, over all devices and processes


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
  pooling: Pooling
  init_from: str  # a jaxlm pretraining run folder, or '' for random initialisation


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  # The names jaxlm.training.optim.make_optimizer reads are those of jaxlm.config.TrainConfig.
  steps: int
  learning_rate: float
  min_lr_ratio: float
  warmup_steps: int
  weight_decay: float
  beta1: float
  beta2: float
  grad_clip: float  # 0 disables clipping
  seed: int  # head initialisation, holdout, example order, dropout
  log_every: int
  eval_every: int
  checkpoint_every: int
  keep_checkpoints: int


@dataclasses.dataclass(frozen=True)
class Config:
  model: ModelConfig
  data: DataConfig
  classifier: ClassifierConfig
  train: TrainConfig
  parallel: ParallelConfig

  @property
  def num_classes(self) -> int:
    return len(self.data.class_names)


SECTIONS = ('model', 'data', 'classifier', 'train', 'parallel')

# Fine-tuning runs on the data and model axes. ParallelConfig settings an
# experiment leaves out take these values (only those ParallelConfig has), so
# pipeline settings added to jaxlm.config later do not break these configs.
PARALLEL_DEFAULTS = {'data': -1, 'model': 1, 'pipeline': 1, 'zero_stage': 0,
                     'remat': 'none', 'microbatches': 1, 'pipeline_schedule': 'gpipe',
                     'pipeline_repeats': 1}


def _convert(cls, name: str, key: str, value):
  hint = typing.get_type_hints(cls)[key]
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


def section(cls, raw: Mapping[str, Any], name: str, defaults: Mapping[str, Any] = ()):
  """One checked dataclass from a dict; fields with a default are optional.

  As in jaxlm.config: jaxlm.config.DERIVED fields (model.remat) are never set.
  """
  derived = config_lib.DERIVED.get(cls.__name__, set())
  fields = [f.name for f in dataclasses.fields(cls) if f.name not in derived]
  required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
  unknown = set(raw) - set(fields)
  if unknown:
    raise ConfigError(
        f'unknown setting(s) {", ".join(f"{name}.{k}" for k in sorted(unknown))};'
        f' known: {", ".join(fields)}')
  values = {k: defaults[k] for k in fields if k in defaults}
  values.update(raw)
  missing = [k for k in required if k not in values]
  if missing:
    raise ConfigError(
        f'missing setting(s) {", ".join(f"{name}.{k}" for k in missing)};'
        ' add them to the experiment config')
  return cls(**{k: _convert(cls, name, k, values[k]) for k in fields if k in values})


def from_configdict(cd) -> Config:
  """Turns an experiment's ConfigDict into a checked, frozen Config."""
  raw = cd.to_dict() if hasattr(cd, 'to_dict') else dict(cd)
  if set(raw) != set(SECTIONS):
    extra = ', '.join(sorted(set(raw) ^ set(SECTIONS)))
    raise ConfigError(f'config sections must be {list(SECTIONS)}; got extra/missing: {extra}')
  parallel = section(ParallelConfig, raw['parallel'], 'parallel', PARALLEL_DEFAULTS)
  config = Config(
      model=dataclasses.replace(section(ModelConfig, raw['model'], 'model'),
                                remat=parallel.remat),
      data=section(DataConfig, raw['data'], 'data'),
      classifier=section(ClassifierConfig, raw['classifier'], 'classifier'),
      train=section(TrainConfig, raw['train'], 'train'),
      parallel=parallel)
  validate(config)
  return config


def validate(c: Config) -> None:
  """Checks what can be checked without devices or data; raises ConfigError."""
  m, d, t, p = c.model, c.data, c.train, c.parallel
  validate_model(m, 'model')
  positive = {
      'data.max_length': d.max_length, 'data.batch_size': d.batch_size,
      'train.steps': t.steps, 'train.log_every': t.log_every,
      'train.eval_every': t.eval_every, 'train.checkpoint_every': t.checkpoint_every,
      'train.keep_checkpoints': t.keep_checkpoints,
  }
  for name, value in positive.items():
    if value <= 0:
      raise ConfigError(f'{name}={value} must be a positive integer')
  if not 0.0 < d.eval_holdout <= 1.0:
    raise ConfigError(f'data.eval_holdout={d.eval_holdout} must be in (0, 1]')
  if len(d.class_names) < 2 or len(set(d.class_names)) != len(d.class_names):
    raise ConfigError(f'data.class_names={d.class_names} must name two or more distinct classes')
  if d.source is Source.CSV:
    _validate_csv(d)
  else:
    _validate_tfds(d)
  if d.tokenizer is TokenizerKind.SENTENCEPIECE and d.vocab_size <= 0:
    raise ConfigError('data.tokenizer=sentencepiece needs data.vocab_size > 0, e.g. 8000')
  if not c.classifier.init_from and d.max_length > m.max_len:
    raise ConfigError(
        f'data.max_length={d.max_length} exceeds model.max_len={m.max_len};'
        ' raise model.max_len or lower data.max_length')
  if t.learning_rate <= 0:
    raise ConfigError(f'train.learning_rate={t.learning_rate} must be > 0')
  if not 0.0 <= t.min_lr_ratio <= 1.0:
    raise ConfigError(f'train.min_lr_ratio={t.min_lr_ratio} must be in [0, 1]')
  if not 0 <= t.warmup_steps <= t.steps:
    raise ConfigError(
        f'train.warmup_steps={t.warmup_steps} must be in [0, train.steps={t.steps}]')
  if t.grad_clip < 0:
    raise ConfigError(f'train.grad_clip={t.grad_clip} must be >= 0 (0 disables)')
  if p.pipeline != 1:
    raise ConfigError(f'parallel.pipeline={p.pipeline}: fine-tuning runs on the data and'
                      ' model axes only; set parallel.pipeline=1')
  for name, value in (('parallel.data', p.data), ('parallel.model', p.model)):
    if value == 0 or value < -1:
      raise ConfigError(f'{name}={value} must be a positive size or -1 (fill)')
  if p.data == -1 and p.model == -1:
    raise ConfigError('only one of parallel.data/model may be -1 (fill)')
  if p.zero_stage not in (0, 1, 2, 3):
    raise ConfigError(f'parallel.zero_stage={p.zero_stage} must be 0, 1, 2 or 3')


def validate_model(m: ModelConfig, where: str) -> None:
  """The model-shape checks; `where` names the source (a section or a file)."""
  for key in ('num_layers', 'num_heads', 'd_model', 'd_ff', 'max_len', 'vocab_multiple'):
    if getattr(m, key) <= 0:
      raise ConfigError(f'{where}: model.{key}={getattr(m, key)} must be a positive integer')
  if m.d_model % m.num_heads:
    raise ConfigError(
        f'{where}: model.num_heads={m.num_heads} does not divide model.d_model={m.d_model};'
        ' pick num_heads among the divisors of d_model')
  if not 0.0 <= m.dropout < 1.0:
    raise ConfigError(f'{where}: model.dropout={m.dropout} must be in [0, 1)')
  if m.dtype not in _DTYPES:
    raise ConfigError(f'{where}: model.dtype={m.dtype!r} is not one of: {", ".join(_DTYPES)}')
  if m.vocab_size < 0:
    raise ConfigError(f'{where}: model.vocab_size={m.vocab_size} must be >= 0'
                      ' (0: from the tokenizer)')


def _validate_csv(d: DataConfig) -> None:
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


def _validate_tfds(d: DataConfig) -> None:
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


def to_dict(c: Config) -> dict:
  """A JSON-ready dict (enums as values, tuples as lists), e.g. for the run folder."""
  def convert(v):
    if isinstance(v, enum.Enum):
      return v.value
    return list(v) if isinstance(v, tuple) else v
  out = {name: {k: convert(v) for k, v in dataclasses.asdict(getattr(c, name)).items()}
         for name in SECTIONS}
  del out['model']['remat']  # a copy of parallel.remat
  return out
