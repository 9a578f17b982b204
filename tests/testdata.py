"""Test data: the bundled corpus, the slices in tests/assets, DataConfigs that read them offline."""

import atexit
import functools
import pathlib
import shutil
import tempfile

from jaxlm.config import DataConfig, DataSource, TokenizerKind
from jaxlm.data import sources

REPO = pathlib.Path(__file__).resolve().parents[1]
ASSETS = REPO / 'tests' / 'assets'  # see its README.md: sources and licences


def shakespeare_dir() -> str:
  """The package's tiny_shakespeare folder (input.txt): TFDS's manual_dir for it."""
  path = sources.bundled_manual_dir('tiny_shakespeare')
  assert path, 'jaxlm/data/corpora/tiny_shakespeare is missing from the package'
  return path


def tiny_shakespeare_text() -> str:
  return (pathlib.Path(shakespeare_dir()) / 'input.txt').read_text('utf-8')


def ag_news_dir() -> pathlib.Path:
  """test_slice.csv (500 rows a class of AG News test.csv) and train_subset.csv (581 rows)."""
  return ASSETS / 'ag_news'


def tatoeba_eng_fra() -> pathlib.Path:
  """500 English<TAB>French pairs from Tatoeba."""
  return ASSETS / 'tatoeba_eng_fra' / 'eng-fra_slice.tsv'


@functools.cache
def tfds_data_dir() -> str:
  """One TFDS folder per test session, so tiny_shakespeare is prepared once."""
  path = tempfile.mkdtemp(prefix='jaxlm_tfds_')
  atexit.register(shutil.rmtree, path, ignore_errors=True)
  return path


def data_config(**overrides) -> DataConfig:
  """tiny_shakespeare from the bundled corpus, char tokens, 12 x 64 batches."""
  values = dict(
      source=DataSource.TFDS, dataset='tiny_shakespeare', text_key='text',
      train_split='train', eval_split='validation',
      manual_dir=shakespeare_dir(),
      tfds_data_dir=tfds_data_dir(), train_files='', eval_files='',
      tokenizer=TokenizerKind.CHAR, vocab_size=0, seq_len=64, batch_size=12)
  values.update(overrides)
  return DataConfig(**values)


def files_config(train_files: str, eval_files: str = '', **overrides) -> DataConfig:
  """data_config reading local text files instead of TFDS."""
  return data_config(source=DataSource.FILES, train_files=train_files,
                     eval_files=eval_files, **overrides)
