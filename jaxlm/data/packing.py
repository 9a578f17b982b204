"""Packed rows: whole documents side by side, with segment ids and per-document positions.

A token stream comes with its document boundaries `doc_offsets` (int64
[D+1]: document d is tokens[doc_offsets[d]:doc_offsets[d+1]], its separator
or EOS included). A row holds `seq_len` = L (input, target) pairs. A
document of n tokens gives n - 1 pairs (inputs d[:-1], targets d[1:]); one
of more than L pairs is cut into chunks of at most L + 1 tokens that overlap
by one token, so every target is kept once. Each chunk is its own segment,
with positions from 0.

Chunks go into rows in order, greedily: a chunk that does not fit the rest
of the current row starts the next one, and the rest is padding (segment 0,
weight 0). A row's segments are numbered 1, 2, ... A batch is
{'inputs', 'targets', 'segment_ids', 'positions'} int32 [b, L] and
'weights' float32 [b, L] (1 on real targets): what jaxlm/model/gpt.py and
the loss in jaxlm/tasks/lm.py take.

Training batches are a pure function of (seed, step): epoch e places the
documents in the order default_rng([seed, e]).permutation(D); global row g
is row g - (rows of the epochs before) of the first epoch whose rows reach
past g, so the rows past an epoch's end continue into the next epoch. An
epoch's plan (which chunks go in which row) is computed once and cached;
finding the epoch of a row plans every epoch before it once (a resumed run
at epoch e plans e + 1 epochs). Eval batches are fixed rows of the
documents in stream order, spread evenly over the split.

Only numpy, no jax. `tokens` is anything sliced as tokens[a:b] (an array or
a prepared dataset's TokenStream); a batch reads only the chunks of this process's rows.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

import numpy as np

from jaxlm.config import ConfigError

KEYS = ('inputs', 'targets', 'segment_ids', 'positions', 'weights')


@dataclasses.dataclass(frozen=True, eq=False)
class Chunks:
  """The documents cut into chunks, in stream order (hashed by identity: a cache key).

  Chunk c reads tokens[start[c] : start[c] + pairs[c] + 1]; document d owns
  chunks first[d] .. first[d] + count[d] - 1 (none if it has under 2 tokens).
  """
  offsets: np.ndarray  # int64 [D+1], a private copy: what the chunks were cut from
  seq_len: int
  start: np.ndarray  # int64 [C]
  pairs: np.ndarray  # int64 [C], 1..L
  first: np.ndarray  # int64 [D]
  count: np.ndarray  # int64 [D]


@dataclasses.dataclass(frozen=True)
class EpochPlan:
  """One epoch's rows: row r holds chunks order[row_ptr[r]:row_ptr[r+1]], at columns col."""
  order: np.ndarray  # int64 [C]: chunk ids in placement order
  col: np.ndarray  # int64 [C]: where each placed chunk starts in its row
  row_ptr: np.ndarray  # int64 [R+1]

  @property
  def num_rows(self) -> int:
    return len(self.row_ptr) - 1


def cut(doc_offsets, seq_len: int) -> Chunks:
  """Every document's chunks of at most seq_len pairs (seq_len + 1 tokens, overlapping by 1)."""
  if seq_len < 1:
    raise ConfigError(f'data.seq_len={seq_len} must be a positive integer')
  offsets = np.array(doc_offsets, dtype=np.int64)  # a copy: the cache compares against it
  if offsets.ndim != 1 or len(offsets) < 2:
    raise ConfigError(f'doc_offsets must be a 1-D array of D+1 >= 2 offsets, got shape'
                      f' {offsets.shape}')
  sizes = np.diff(offsets)
  if offsets[0] < 0 or (sizes < 0).any():
    raise ConfigError('doc_offsets must start at >= 0 and never decrease')
  pairs_D = np.maximum(sizes - 1, 0)
  count = -(-pairs_D // seq_len)
  first = np.cumsum(count) - count
  if not count.sum():
    raise ConfigError(f'no document of the {len(sizes)} has two tokens: nothing to train on')
  doc_C = np.repeat(np.arange(len(sizes)), count)
  k_C = np.arange(len(doc_C)) - first[doc_C]
  start = offsets[doc_C] + k_C * seq_len
  pairs = np.minimum(seq_len, pairs_D[doc_C] - k_C * seq_len)
  for a in (offsets, start, pairs, first, count):
    a.flags.writeable = False  # shared by the caches
  return Chunks(offsets, seq_len, start, pairs, first, count)


def place(pairs_C: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
  """Greedy rows for chunks of these sizes, in order: (column of each chunk, row_ptr)."""
  fits = lambda fill, p: fill + p if fill + p <= seq_len else p  # noqa: E731
  end_C = np.fromiter(itertools.accumulate(pairs_C.tolist(), fits), np.int64, len(pairs_C))
  col_C = end_C - pairs_C
  row_ptr = np.append(np.flatnonzero(col_C == 0), len(pairs_C))
  return col_C, row_ptr


def _plan(chunks: Chunks, doc_order: np.ndarray) -> EpochPlan:
  count_D = chunks.count[doc_order]
  begin_D = np.cumsum(count_D) - count_D  # where each document's chunks start in `order`
  n = int(count_D.sum())
  order = np.repeat(chunks.first[doc_order] - begin_D, count_D) + np.arange(n)
  col, row_ptr = place(chunks.pairs[order], chunks.seq_len)
  for a in (order, col, row_ptr):
    a.flags.writeable = False
  return EpochPlan(order, col, row_ptr)


@functools.lru_cache(maxsize=2)
def epoch_plan(chunks: Chunks, seed: int, epoch: int) -> EpochPlan:
  """Epoch's rows: the documents in the order default_rng([seed, epoch]).permutation(D)."""
  perm = np.random.default_rng([seed, epoch]).permutation(len(chunks.count))
  return _plan(chunks, perm)


_CHUNKS: list[Chunks] = []  # the few most recent cuts, newest last
_EPOCH_ENDS: dict[tuple[int, int], list[int]] = {}  # (id(chunks), seed) -> rows to each epoch's end


def chunks_for(tokens, doc_offsets, seq_len: int) -> Chunks:
  """`cut`, cached: the same boundaries (compared by value, O(D)) give the same Chunks."""
  offsets = np.asarray(doc_offsets)
  if len(offsets) and offsets[-1] > len(tokens):
    raise ConfigError(f'doc_offsets end at token {offsets[-1]}, past the {len(tokens)}'
                      ' tokens of the stream')
  for c in _CHUNKS:
    if c.seq_len == seq_len and np.array_equal(c.offsets, offsets):
      return c
  c = cut(offsets, seq_len)
  _CHUNKS.append(c)
  if len(_CHUNKS) > 4:
    old = _CHUNKS.pop(0)
    for key in [k for k in _EPOCH_ENDS if k[0] == id(old)]:
      del _EPOCH_ENDS[key]
  return c


def _locate(chunks: Chunks, seed: int, g_B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(epoch, row within the epoch) of each global row g."""
  ends = _EPOCH_ENDS.setdefault((id(chunks), seed), [])
  while not ends or ends[-1] <= g_B.max():
    ends.append((ends[-1] if ends else 0) + epoch_plan(chunks, seed, len(ends)).num_rows)
  ends_E = np.asarray(ends)
  epoch_B = np.searchsorted(ends_E, g_B, side='right')
  return epoch_B, g_B - np.concatenate([[0], ends_E])[epoch_B]


def _local_rows(batch_size: int, process_index: int, process_count: int) -> np.ndarray:
  if batch_size < 1 or batch_size % process_count:
    raise ConfigError(f'data.batch_size={batch_size} does not divide over {process_count}'
                      ' processes; use a multiple of the process count')
  b = batch_size // process_count
  return process_index * b + np.arange(b)


def _rows(tokens, chunks: Chunks, plans: list[EpochPlan], rows: list[int]) -> dict:
  """The batch of plans[i]'s row rows[i], for each i: reads only those rows' chunks."""
  L = chunks.seq_len
  out = {k: np.zeros((len(rows), L), np.float32 if k == 'weights' else np.int32)
         for k in KEYS}
  for i, (plan, r) in enumerate(zip(plans, rows)):
    lo, hi = plan.row_ptr[r], plan.row_ptr[r + 1]
    for segment, (c, col) in enumerate(zip(plan.order[lo:hi], plan.col[lo:hi]), start=1):
      start, n = int(chunks.start[c]), int(chunks.pairs[c])
      piece = np.asarray(tokens[start:start + n + 1], np.int32)
      cols = slice(int(col), int(col) + n)
      out['inputs'][i, cols] = piece[:-1]
      out['targets'][i, cols] = piece[1:]
      out['segment_ids'][i, cols] = segment
      out['positions'][i, cols] = np.arange(n)
      out['weights'][i, cols] = 1.0
  return out


def packed_train_batch(tokens, doc_offsets, step: int, *, batch_size: int, seq_len: int,
                       seed: int, process_index: int = 0, process_count: int = 1) -> dict:
  """This process's rows of global batch `step` of packed rows (the module docstring's keys).

  Global row g = step * batch_size + row, rows past an epoch's end taken from
  the next epoch.
  """
  if seed < 0:
    raise ConfigError(f'train.seed={seed} must be >= 0')
  chunks = chunks_for(tokens, doc_offsets, seq_len)
  g_B = step * batch_size + _local_rows(batch_size, process_index, process_count)
  epoch_B, row_B = _locate(chunks, seed, g_B)
  plans = [epoch_plan(chunks, seed, int(e)) for e in epoch_B]
  return _rows(tokens, chunks, plans, row_B.tolist())


def packed_eval_batches(tokens, doc_offsets, *, batch_size: int, seq_len: int,
                        num_batches: int, process_index: int = 0,
                        process_count: int = 1) -> list[dict]:
  """Up to num_batches fixed batches of packed rows (documents in stream order), spread evenly."""
  chunks = chunks_for(tokens, doc_offsets, seq_len)
  plan = _plan(chunks, np.arange(len(chunks.count)))
  count = min(num_batches, plan.num_rows // batch_size)
  if count < 1:
    raise ConfigError(
        f'the eval split packs into {plan.num_rows} rows of data.seq_len={seq_len}, fewer'
        f' than one batch of data.batch_size={batch_size}; lower either or use a longer'
        ' eval split')
  stride = plan.num_rows // (count * batch_size)
  rows = _local_rows(batch_size, process_index, process_count)
  return [_rows(tokens, chunks, [plan] * len(rows), ((i * batch_size + rows) * stride).tolist())
          for i in range(count)]
