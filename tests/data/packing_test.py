"""Packed rows: every target once per epoch, segments within documents, pure batches."""

import numpy as np
import pytest

from jaxlm.config import ConfigError
from jaxlm.data import packing

L = 16
# Document sizes in tokens (EOS included): 1 gives no pair; 17 = L + 1 exactly one
# full row; 18 two chunks (16 and 1 pairs); 50 four chunks (16, 16, 16, 1).
SIZES = [5, 9, 1, 17, 3, 18, 2, 12, 50, 7, 16, 4, 33, 6, 10, 2, 8, 11, 20, 5]


def _stream(sizes=SIZES):
  """Token i of the stream is i: a target names where it came from."""
  offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
  return np.arange(offsets[-1], dtype=np.int32), offsets


def _rows_of_epoch(tokens, offsets, seed=0, epoch=0):
  """All rows of one epoch, as one batch of batch_size 1 per row."""
  chunks = packing.chunks_for(tokens, offsets, L)
  n_before = sum(packing.epoch_plan(chunks, seed, e).num_rows for e in range(epoch))
  rows = packing.epoch_plan(chunks, seed, epoch).num_rows
  batches = [packing.packed_train_batch(tokens, offsets, n_before + g, batch_size=1,
                                        seq_len=L, seed=seed) for g in range(rows)]
  return {k: np.concatenate([b[k] for b in batches]) for k in packing.KEYS}


def _all_targets(offsets):
  """Stream indices of every document's targets: its tokens but the first."""
  return np.concatenate([np.arange(a + 1, b) for a, b in zip(offsets[:-1], offsets[1:])])


@pytest.mark.parametrize('epoch', [0, 1])
def test_every_target_appears_once_per_epoch(epoch):
  tokens, offsets = _stream()
  b = _rows_of_epoch(tokens, offsets, epoch=epoch)
  real = b['weights'] > 0
  np.testing.assert_array_equal(np.sort(b['targets'][real]), _all_targets(offsets))
  np.testing.assert_array_equal(b['inputs'][real], b['targets'][real] - 1)  # the pair
  assert b['weights'].dtype == np.float32 and set(np.unique(b['weights'])) <= {0.0, 1.0}
  for k in ('inputs', 'targets', 'segment_ids', 'positions'):
    assert b[k].dtype == np.int32 and b[k].shape == b['weights'].shape


def test_segments_stay_in_one_document_and_positions_restart():
  tokens, offsets = _stream()
  b = _rows_of_epoch(tokens, offsets)
  doc_of = lambda t: np.searchsorted(offsets, t, side='right') - 1  # noqa: E731
  for row in range(len(b['weights'])):
    seg, pos, tgt = b['segment_ids'][row], b['positions'][row], b['targets'][row]
    real = seg > 0
    np.testing.assert_array_equal(real, b['weights'][row] > 0)  # padding = segment 0 = weight 0
    n = real.sum()
    assert real[:n].all() and not real[n:].any()  # padding only at the end
    np.testing.assert_array_equal(np.unique(seg[:n]), np.arange(1, seg[:n].max() + 1))
    assert (np.diff(seg[:n]) >= 0).all()  # each segment is one contiguous span
    for s in np.unique(seg[:n]):
      cols = np.flatnonzero(seg == s)
      np.testing.assert_array_equal(pos[cols], np.arange(len(cols)))
      assert len(set(doc_of(tgt[cols]))) == 1  # never straddles a boundary
      np.testing.assert_array_equal(np.diff(tgt[cols]), 1)  # consecutive tokens
    assert not pos[~real].any() and not tgt[~real].any() and not b['inputs'][row][~real].any()


def test_long_documents_are_cut_into_chunks_overlapping_by_one_token():
  tokens, offsets = _stream()
  b = _rows_of_epoch(tokens, offsets)
  spans = {}  # first target of each segment -> its number of pairs
  for row in range(len(b['weights'])):
    for s in np.unique(b['segment_ids'][row][b['segment_ids'][row] > 0]):
      cols = np.flatnonzero(b['segment_ids'][row] == s)
      spans[int(b['targets'][row][cols[0]])] = len(cols)
  for size, start in zip(SIZES, offsets[:-1]):
    pairs = size - 1
    expected = {int(start) + 1 + k * L: min(L, pairs - k * L) for k in range(-(-pairs // L))}
    # Chunk k starts at target start + 1 + k*L, its first input the last target
    # of chunk k-1 (inputs are targets - 1): one token of overlap, none lost.
    assert {t: spans[t] for t in expected} == expected, size
  assert spans[int(offsets[8]) + 1 + 3 * L] == 1  # the 50-token document's last chunk


def test_placement_is_greedy():
  col, row_ptr = packing.place(np.array([10, 6, 1, 15, 3, 12, 5, 16]), L)
  np.testing.assert_array_equal(col, [0, 10, 0, 1, 0, 3, 0, 0])
  np.testing.assert_array_equal(row_ptr, [0, 2, 4, 6, 7, 8])


def test_batches_are_pure_in_seed_and_step():
  tokens, offsets = _stream()
  kw = dict(batch_size=4, seq_len=L, seed=3)
  first = packing.packed_train_batch(tokens, offsets, 5, **kw)
  packing.epoch_plan.cache_clear()
  packing._CHUNKS.clear()
  packing._EPOCH_ENDS.clear()
  again = packing.packed_train_batch(tokens, offsets.copy(), 5, **kw)
  for k in packing.KEYS:
    np.testing.assert_array_equal(first[k], again[k])
  other_seed = packing.packed_train_batch(tokens, offsets, 5, **dict(kw, seed=4))
  assert not np.array_equal(first['targets'], other_seed['targets'])


def test_epochs_differ_and_rows_wrap_into_the_next_epoch():
  tokens, offsets = _stream()
  chunks = packing.chunks_for(tokens, offsets, L)
  r0 = packing.epoch_plan(chunks, 0, 0).num_rows
  e0, e1 = _rows_of_epoch(tokens, offsets, 0, 0), _rows_of_epoch(tokens, offsets, 0, 1)
  assert not np.array_equal(e0['targets'], e1['targets'][:r0])
  # Batch 1 of r0 - 2 rows: epoch 0's last 2 rows, then epoch 1's first r0 - 4.
  assert r0 > 4
  b = packing.packed_train_batch(tokens, offsets, 1, batch_size=r0 - 2, seq_len=L, seed=0)
  np.testing.assert_array_equal(b['targets'][:2], e0['targets'][r0 - 2:])
  np.testing.assert_array_equal(b['targets'][2:], e1['targets'][:r0 - 4])


def test_process_rows_partition_the_global_batch(tmp_path):
  tokens, offsets = _stream()
  stored = np.memmap(tmp_path / 'tokens.bin', np.uint16, 'w+', shape=tokens.shape)
  stored[:] = tokens
  stored.flush()
  kw = dict(batch_size=6, seq_len=L, seed=1)
  whole = packing.packed_train_batch(stored, offsets, 2, **kw)
  parts = [packing.packed_train_batch(stored, offsets, 2, process_index=i, process_count=3, **kw)
           for i in range(3)]
  for k in packing.KEYS:
    np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), whole[k])
    np.testing.assert_array_equal(
        whole[k], packing.packed_train_batch(tokens, offsets, 2, **kw)[k])  # memmap = array


def test_eval_batches_are_fixed_rows_in_stream_order():
  tokens, offsets = _stream()
  batches = packing.packed_eval_batches(tokens, offsets, batch_size=2, seq_len=L,
                                        num_batches=3)
  again = packing.packed_eval_batches(tokens, offsets, batch_size=2, seq_len=L, num_batches=3)
  assert len(batches) == 3
  for a, b in zip(batches, again):
    for k in packing.KEYS:
      np.testing.assert_array_equal(a[k], b[k])
  np.testing.assert_array_equal(batches[0]['targets'][0, :4], [1, 2, 3, 4])  # document 0
  targets = np.concatenate([b['targets'][b['weights'] > 0] for b in batches])
  assert len(np.unique(targets)) == len(targets)  # rows never overlap
  halves = [packing.packed_eval_batches(tokens, offsets, batch_size=2, seq_len=L, num_batches=3,
                                        process_index=i, process_count=2) for i in range(2)]
  np.testing.assert_array_equal(
      np.concatenate([halves[0][1]['targets'], halves[1][1]['targets']]), batches[1]['targets'])


@pytest.mark.parametrize('offsets, kw, match', [
    ([0, 5, 3, 9], {}, r'doc_offsets must start at >= 0 and never decrease'),
    ([0, 1, 2, 3], {}, r'no document of the 3 has two tokens'),
    ([0, 5, 90], {}, r'doc_offsets end at token 90, past the 60 tokens'),
    ([0, 30, 60], {'batch_size': 3, 'process_count': 2},
     r'data\.batch_size=3 does not divide over 2 processes'),
    ([0, 30, 60], {'seed': -1}, r'train\.seed=-1 must be >= 0'),
])
def test_bad_input_is_one_line(offsets, kw, match):
  kw = {'batch_size': 2, 'seed': 0, **kw}
  with pytest.raises(ConfigError, match=match) as info:
    packing.packed_train_batch(np.arange(60), np.array(offsets), 0, seq_len=L, **kw)
  assert '\n' not in str(info.value)


def test_eval_split_shorter_than_a_batch_says_so():
  with pytest.raises(ConfigError, match=r'packs into 1 rows .* fewer than one batch'):
    packing.packed_eval_batches(np.arange(10), np.array([0, 10]), batch_size=2, seq_len=L,
                                num_batches=1)
