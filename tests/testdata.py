"""Test data: the shared corpora and DataConfigs that read them offline."""

import atexit
import functools
import pathlib
import shutil
import tempfile

from jaxlm.config import DataConfig, DataSource, TokenizerKind

REPO = pathlib.Path(__file__).resolve().parents[1]


def shared_data_dir() -> pathlib.Path:
  """The read-only corpora beside the repo (../shared/data)."""
  return REPO.parent / 'shared' / 'data'


def tiny_shakespeare_text() -> str:
  return (shared_data_dir() / 'tinyshakespeare' / 'input.txt').read_text('utf-8')


@functools.cache
def tfds_data_dir() -> str:
  """One TFDS folder per test session, so tiny_shakespeare is prepared once."""
  path = tempfile.mkdtemp(prefix='jaxlm_tfds_')
  atexit.register(shutil.rmtree, path, ignore_errors=True)
  return path


def data_config(**overrides) -> DataConfig:
  """tiny_shakespeare from the shared folder, char tokens, 12 x 64 batches."""
  values = dict(
      source=DataSource.TFDS, dataset='tiny_shakespeare', text_key='text',
      train_split='train', eval_split='validation',
      manual_dir=str(shared_data_dir() / 'tinyshakespeare'),
      tfds_data_dir=tfds_data_dir(), train_files='', eval_files='',
      tokenizer=TokenizerKind.CHAR, vocab_size=0, seq_len=64, batch_size=12)
  values.update(overrides)
  return DataConfig(**values)


def files_config(train_files: str, eval_files: str = '', **overrides) -> DataConfig:
  """data_config reading local text files instead of TFDS."""
  return data_config(source=DataSource.FILES, train_files=train_files,
                     eval_files=eval_files, **overrides)
