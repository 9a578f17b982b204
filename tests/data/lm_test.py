"""Data: TFDS and file sources, token streams, pure batches."""

import contextlib
import os
import time

import numpy as np
import pytest

from jaxlm.data import lm as data
from jaxlm.data import tokenizers
from jaxlm.config import ConfigError
from tests.testdata import data_config, files_config, tiny_shakespeare_text

STREAM = np.arange(1000, dtype=np.uint16)  # token i is i: a window shows its start


class EosBytes(tokenizers.ByteTokenizer):
  """Bytes plus an EOS id, to see where documents end."""
  vocab_size = 257
  eos_id = 256


@contextlib.contextmanager
def _raises(match):
  """pytest.raises(ConfigError, match=...) that also wants a one-line message."""
  with pytest.raises(ConfigError, match=match) as info:
    yield info
  assert '\n' not in str(info.value), str(info.value)


# --- Sources -----------------------------------------------------------------


def test_tfds_tiny_shakespeare_offline():
  cfg = data_config()
  train = list(data.documents(cfg, 'train'))
  valid = list(data.documents(cfg, 'validation'))
  assert len(train) == 1 and len(valid) == 1
  assert len(train[0]) == 1_003_854 and len(valid[0]) == 55_770
  assert train[0].startswith('First Citizen:')
  assert tiny_shakespeare_text().startswith(train[0])  # the first 90%


def test_files_source_reads_sorted_globs(tmp_path):
  for name, text in [('b.txt', 'bee'), ('a.txt', 'ay'), ('c.md', 'not me'), ('e.txt', 'eval')]:
    (tmp_path / name).write_text(text)
  cfg = files_config(str(tmp_path / '[ab].txt'), eval_files=str(tmp_path / 'e*.txt'))
  assert list(data.documents(cfg, cfg.train_split)) == ['ay', 'bee']
  assert list(data.documents(cfg, cfg.eval_split)) == ['eval']


def test_files_source_holds_out_the_last_tenth(tmp_path):
  (tmp_path / 'a.txt').write_text('a' * 85)
  (tmp_path / 'b.txt').write_text('b' * 15)
  cfg = files_config(str(tmp_path / '*.txt'))
  train = list(data.documents(cfg, cfg.train_split))
  held = list(data.documents(cfg, cfg.eval_split))
  assert train == ['a' * 85, 'b' * 5] and held == ['b' * 10]


@pytest.mark.parametrize('overrides, match', [
    ({'dataset': 'tiny_shakespear'},
     r"data\.dataset='tiny_shakespear' is not a TFDS dataset; did you mean tiny_shakespeare"),
    ({'manual_dir': '/no/such/dir'}, r'data\.manual_dir=/no/such/dir does not exist'),
    ({'train_split': 'nope'}, r"data\.train_split='nope' is not a split .* train, validation"),
    ({'text_key': 'body'}, r"data\.text_key='body' is not a feature .* text"),
])
def test_tfds_bad_input(overrides, match):
  cfg = data_config(**overrides)
  with _raises(match):
    data.documents(cfg, cfg.train_split)  # raised before iterating


def test_tfds_bad_eval_split_and_empty_manual_dir(tmp_path):
  cfg = data_config(eval_split='valid')
  with _raises(r"data\.eval_split='valid' is not a split"):
    data.documents(cfg, cfg.eval_split)
  with _raises(r'data\.manual_dir=.* does not exist or is empty'):
    data.documents(data_config(manual_dir=str(tmp_path)), 'train')


def test_files_bad_input(tmp_path):
  cfg = files_config(str(tmp_path / '*.txt'), eval_files=str(tmp_path / '*.eval'))
  with _raises(r'data\.train_files=.* matches no files'):
    data.documents(cfg, cfg.train_split)
  (tmp_path / 'empty.txt').write_text('')
  with _raises(r'data\.train_files=.* matches only empty files'):
    data.documents(cfg, cfg.train_split)
  with _raises(r'data\.eval_files=.* matches no files'):
    data.documents(cfg, cfg.eval_split)
  (tmp_path / 'bad.txt').write_bytes(b'good text \xff\xfe more')
  with _raises(r'bad\.txt is not UTF-8 \(byte 10'):
    list(data.documents(cfg, cfg.train_split))


def test_files_holdout_of_a_tiny_corpus_is_empty(tmp_path):
  (tmp_path / 'a.txt').write_text('abc')
  cfg = files_config(str(tmp_path / '*.txt'))
  with _raises(r"no text for the 'validation' split; .* data\.eval_files"):
    list(data.documents(cfg, cfg.eval_split))


# --- Token streams -------------------------------------------------------------


def test_tiny_shakespeare_stream_is_built_anew_and_never_cached(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  cfg = data_config()
  tok = tokenizers.CharTokenizer.train([tiny_shakespeare_text()])
  tokens = data.tokenize_split(cfg, tok, 'train')
  assert tokens.dtype == np.uint16 and len(tokens) == 1_003_854
  assert os.listdir(tmp_path) == []  # nothing written that a later run could reuse
  np.testing.assert_array_equal(data.tokenize_split(cfg, tok, 'train'), tokens)


def test_documents_are_joined_by_newline_or_followed_by_eos(tmp_path):
  (tmp_path / 'a.txt').write_text('ab')
  (tmp_path / 'b.txt').write_text('c')
  cfg = files_config(str(tmp_path / '*.txt'), eval_files=str(tmp_path / '*.txt'), seq_len=1)
  joined = data.tokenize_split(cfg, tokenizers.ByteTokenizer(), 'train')
  np.testing.assert_array_equal(joined, [97, 98, 10, 99])
  ended = data.tokenize_split(cfg, EosBytes(), 'train')
  np.testing.assert_array_equal(ended, [97, 98, 256, 99, 256])


def test_large_vocabularies_are_stored_as_uint32(tmp_path):
  (tmp_path / 'a.txt').write_text('hello world')
  cfg = files_config(str(tmp_path / '*.txt'), eval_files=str(tmp_path / '*.txt'), seq_len=4)
  big = type('Big', (EosBytes,), {'vocab_size': 70_000})()
  assert data.tokenize_split(cfg, big, 'train').dtype == np.uint32


def test_too_short_for_the_context(tmp_path):
  (tmp_path / 'a.txt').write_text('tiny text')
  cfg = files_config(str(tmp_path / '*.txt'), eval_files=str(tmp_path / '*.txt'), seq_len=8)
  with _raises(r"'train' split has 9 tokens, fewer than the 17 that data\.seq_len=8 needs"):
    data.tokenize_split(cfg, tokenizers.ByteTokenizer(), 'train')
  # One eval window (seq_len + 1 tokens) is enough for the eval split.
  assert len(data.tokenize_split(cfg, tokenizers.ByteTokenizer(), 'validation')) == 9


# --- Batches -------------------------------------------------------------------


def test_train_batches_are_a_pure_function_of_seed_and_step():
  kw = dict(batch_size=8, seq_len=16, seed=3)
  a = data.train_batch(STREAM, 5, **kw)
  assert a['inputs'].dtype == a['targets'].dtype == np.int32
  assert a['inputs'].shape == a['targets'].shape == (8, 16)
  np.testing.assert_array_equal(a['targets'], a['inputs'] + 1)  # shifted by one
  data.train_batch(STREAM, 500, **kw)  # other epochs in between change nothing
  b = data.train_batch(STREAM, 5, **kw)
  np.testing.assert_array_equal(a['inputs'], b['inputs'])
  assert not np.array_equal(a['inputs'], data.train_batch(STREAM, 6, **kw)['inputs'])
  assert not np.array_equal(a['inputs'], data.train_batch(STREAM, 5, **{**kw, 'seed': 4})['inputs'])


def test_train_batch_rows_are_windows_of_the_stream():
  tokens = np.random.default_rng(0).integers(0, 65, 5000).astype(np.uint16)
  batch = data.train_batch(tokens, 7, batch_size=4, seq_len=32, seed=1)
  for inputs, targets in zip(batch['inputs'], batch['targets']):
    start = next(s for s in range(len(tokens)) if np.array_equal(tokens[s:s + 32], inputs))
    np.testing.assert_array_equal(targets, tokens[start + 1:start + 33])


def test_processes_take_their_slice_of_the_global_batch():
  kw = dict(batch_size=8, seq_len=16, seed=0)
  full = data.train_batch(STREAM, 2, **kw)
  parts = [data.train_batch(STREAM, 2, process_index=i, process_count=4, **kw)
           for i in range(4)]
  for key in ('inputs', 'targets'):
    np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), full[key])
  with _raises(r'data\.batch_size=8 does not divide over 3 processes'):
    data.train_batch(STREAM, 0, process_index=0, process_count=3, **kw)


@pytest.mark.parametrize('order', ['table', 'cipher'])  # the cipher: corpora > MAX_TABLE
@pytest.mark.parametrize('batch_size', [4, 7])  # 7 does not divide the 61 windows
def test_each_epoch_visits_every_window_once(batch_size, order, monkeypatch):
  data._epoch_order.cache_clear()
  if order == 'cipher':
    monkeypatch.setattr(data, 'MAX_TABLE', 0)
  seq_len = 16
  n = data.num_windows(len(STREAM), seq_len)
  steps = -(-3 * n // batch_size)
  starts = np.concatenate([
      data.train_batch(STREAM, s, batch_size=batch_size, seq_len=seq_len, seed=0)['inputs'][:, 0]
      for s in range(steps)])
  shifts = []
  for epoch in starts[:3 * n].reshape(3, n):
    assert len(set(epoch % seq_len)) == 1  # one offset per epoch
    shifts.append(epoch[0] % seq_len)
    np.testing.assert_array_equal(np.sort(epoch // seq_len), np.arange(n))
    assert epoch.max() + seq_len < len(STREAM)  # every target in range
  assert len(set(shifts)) > 1  # windows move between epochs
  first = starts[:n] // seq_len
  assert not np.array_equal(first, np.sort(first))  # shuffled
  data._epoch_order.cache_clear()


def test_train_batch_is_fast():
  tokens = np.random.default_rng(0).integers(0, 65, 1_000_000).astype(np.uint16)
  data.train_batch(tokens, 0, batch_size=12, seq_len=64, seed=0)
  start = time.perf_counter()
  for step in range(200):
    data.train_batch(tokens, step, batch_size=12, seq_len=64, seed=0)
  per_batch = (time.perf_counter() - start) / 200
  assert per_batch < 1e-3, f'{per_batch * 1e3:.2f} ms per batch'  # ~0.05 ms here


def test_eval_batches_are_fixed_and_spread_over_the_split():
  batches = data.eval_batches(STREAM, batch_size=4, seq_len=16, num_batches=3)
  assert len(batches) == 3
  for b in batches:
    assert b['inputs'].shape == b['targets'].shape == (4, 16) and b['inputs'].dtype == np.int32
    np.testing.assert_array_equal(b['targets'], b['inputs'] + 1)
  starts = np.concatenate([b['inputs'][:, 0] for b in batches])
  stride = (999 // 16) // 12  # 62 windows, 12 taken: every 5th
  np.testing.assert_array_equal(starts, np.arange(12) * stride * 16)
  again = data.eval_batches(STREAM, batch_size=4, seq_len=16, num_batches=3)
  for a, b in zip(batches, again):
    np.testing.assert_array_equal(a['inputs'], b['inputs'])
  half = data.eval_batches(STREAM, batch_size=4, seq_len=16, num_batches=3,
                           process_index=1, process_count=2)
  np.testing.assert_array_equal(half[2]['inputs'], batches[2]['inputs'][2:])


def test_eval_batches_shrink_to_the_split():
  few = data.eval_batches(STREAM, batch_size=4, seq_len=16, num_batches=100)
  assert len(few) == (999 // 16) // 4
  starts = np.concatenate([b['inputs'][:, 0] for b in few])
  np.testing.assert_array_equal(starts, np.arange(len(few) * 4) * 16)  # all consecutive
  with _raises(r'fewer than one batch of data\.batch_size=100'):
    data.eval_batches(STREAM, batch_size=100, seq_len=16, num_batches=1)

