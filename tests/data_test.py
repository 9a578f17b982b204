"""Data: TFDS and file sources, token streams, deterministic batches."""

import numpy as np
import pytest

from jaxlm import data, tokenizers
from jaxlm.config import ConfigError
from tests.configs import tiny_config


def _data(**overrides):
  return tiny_config(**{f'data__{k}': v for k, v in overrides.items()}).data


@pytest.fixture(scope='module')
def shakespeare(shakespeare_dir, tfds_dir):
  return _data(manual_dir=shakespeare_dir, tfds_data_dir=tfds_dir)


def test_tfds_tiny_shakespeare_offline(shakespeare):
  train = list(data.documents(shakespeare, 'train'))
  valid = list(data.documents(shakespeare, 'validation'))
  assert len(train) == 1 and len(valid) == 1
  assert len(train[0]) == 1_003_854
  assert train[0].startswith('First Citizen:')
  tok = tokenizers.CharTokenizer.train(train)
  assert tok.vocab_size == 65 + 1  # nanoGPT's 65 characters, plus unknown


@pytest.mark.parametrize('overrides, match', [
    ({'dataset': 'no_such_dataset'}, r"data\.dataset='no_such_dataset' is not a TFDS dataset"),
    ({'manual_dir': '/nonexistent'}, r'data\.manual_dir=/nonexistent does not exist'),
    ({'train_split': 'nope'}, r"data\.train_split='nope' is not a split"),
    ({'text_key': 'body'}, r"data\.text_key='body' is not a feature"),
])
def test_tfds_bad_input(shakespeare, overrides, match):
  cfg = _data(**{**{'manual_dir': shakespeare.manual_dir,
                    'tfds_data_dir': shakespeare.tfds_data_dir}, **overrides})
  split = cfg.train_split
  with pytest.raises(ConfigError, match=match):
    next(data.documents(cfg, split))


def test_files_source_with_holdout(tmp_path):
  (tmp_path / 'a.txt').write_text('a' * 90)
  (tmp_path / 'b.txt').write_text('b' * 9)
  cfg = _data(source='files', train_files=str(tmp_path / '*.txt'))
  train = ''.join(data.documents(cfg, cfg.train_split))
  held = ''.join(data.documents(cfg, cfg.eval_split))
  assert train + held == 'a' * 90 + '\n' + 'b' * 9
  assert len(held) == 10


def test_files_source_bad_input(tmp_path):
  cfg = _data(source='files', train_files=str(tmp_path / '*.txt'))
  with pytest.raises(ConfigError, match=r'data\.train_files=.* matches no files'):
    list(data.documents(cfg, cfg.train_split))
  (tmp_path / 'bad.txt').write_bytes(b'good text \xff\xfe more')
  with pytest.raises(ConfigError, match=r'bad\.txt is not UTF-8 \(bad byte at offset 10\)'):
    list(data.documents(cfg, cfg.train_split))


def test_token_stream_is_cached(tmp_path, monkeypatch):
  (tmp_path / 'a.txt').write_text('hello world, ' * 50)
  cfg = _data(source='files', train_files=str(tmp_path / '*.txt'), seq_len=8)
  tok = tokenizers.ByteTokenizer()
  first = data.tokenize_split(cfg, tok, 'train', str(tmp_path))
  assert tok.decode(first) == 'hello world, ' * 45
  monkeypatch.setattr(data, 'documents', lambda *a: pytest.fail('re-tokenized'))
  again = data.tokenize_split(cfg, tok, 'train', str(tmp_path))
  np.testing.assert_array_equal(first, again)


def test_too_short_for_the_context(tmp_path):
  (tmp_path / 'a.txt').write_text('tiny')
  cfg = _data(source='files', train_files=str(tmp_path / '*.txt'), eval_files=str(tmp_path / '*.txt'))
  with pytest.raises(ConfigError, match=r'too few for data\.seq_len=16'):
    data.tokenize_split(cfg, tokenizers.ByteTokenizer(), 'train', str(tmp_path))


STREAM = np.arange(1000, dtype=np.uint16)


def test_train_batches_are_a_pure_function_of_seed_and_step():
  kw = dict(batch_size=8, seq_len=16, seed=3)
  a = data.train_batch(STREAM, 5, **kw)
  b = data.train_batch(STREAM, 5, **kw)
  np.testing.assert_array_equal(a['inputs'], b['inputs'])
  assert a['inputs'].dtype == np.int32 and a['inputs'].shape == (8, 16)
  np.testing.assert_array_equal(a['targets'][:, :-1], a['inputs'][:, 1:])
  np.testing.assert_array_equal(a['targets'], a['inputs'] + 1)  # STREAM is arange
  c = data.train_batch(STREAM, 6, **kw)
  assert not np.array_equal(a['inputs'], c['inputs'])
  d = data.train_batch(STREAM, 5, **{**kw, 'seed': 4})
  assert not np.array_equal(a['inputs'], d['inputs'])


def test_processes_take_disjoint_rows_of_the_global_batch():
  kw = dict(batch_size=8, seq_len=16, seed=0)
  full = data.train_batch(STREAM, 2, **kw)['inputs']
  parts = [data.train_batch(STREAM, 2, process_index=i, process_count=4, **kw)['inputs']
           for i in range(4)]
  np.testing.assert_array_equal(np.concatenate(parts), full)


def test_an_epoch_visits_every_window_once():
  seq_len, batch = 16, 4
  n = data.num_windows(len(STREAM), seq_len)
  starts = []
  for step in range(-(-n // batch) * 2):
    rows = data.train_batch(STREAM, step, batch_size=batch, seq_len=seq_len, seed=0)
    starts.extend(rows['inputs'][:, 0].tolist())
  epoch0, epoch1 = starts[:n], starts[n:2 * n]
  assert len(set(epoch0)) == n
  assert len({s % seq_len for s in epoch0}) == 1  # one offset per epoch
  assert len(set(epoch1)) == n


def test_eval_batches_are_fixed_and_consecutive():
  batches = data.eval_batches(STREAM, batch_size=4, seq_len=16, num_batches=3)
  assert len(batches) == 3
  np.testing.assert_array_equal(batches[1]['inputs'][0], np.arange(64, 80))
  few = data.eval_batches(STREAM, batch_size=4, seq_len=16, num_batches=100)
  assert len(few) == (999 // 16) // 4
  with pytest.raises(ConfigError, match=r'data\.batch_size=100'):
    data.eval_batches(STREAM, batch_size=100, seq_len=16, num_batches=1)
