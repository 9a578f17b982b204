"""Token streams and batches.

A split is one flat token stream: each document's tokens followed by the
tokenizer's EOS id, or, for tokenizers without one (char, byte), documents
joined by '\\n'. Training reads it from a prepared dataset folder
(jaxlm/data/prepare.py, read by offset); tokenize_split builds it in memory.

Training batches are a pure function of (seed, step): each epoch visits every
non-overlapping window of the stream once, in a seeded random order and from
a seeded offset, so windows differ between epochs. Restoring the step restores
the data position exactly. Eval batches are fixed windows spread evenly
over the split, so a few of them sample all of it.
"""

from __future__ import annotations

import functools
from typing import Iterable

import numpy as np

from jaxlm.config import ConfigError, DataConfig
from jaxlm.data.sources import documents  # noqa: F401  (re-exported: data.documents)

_DOCS_PER_CHUNK = 4096  # documents tokenized together (SentencePiece threads)


def tokenize_split(cfg: DataConfig, tokenizer, split: str) -> np.ndarray:
  """The split as one token stream, in memory; checks it holds at least one window."""
  tokens = _tokenize(tokenizer, documents(cfg, split))
  check_length(cfg, len(tokens), split)
  return tokens


def check_length(cfg: DataConfig, num_tokens: int, split: str) -> None:
  """Training needs room for one window plus the epoch offset; eval one window."""
  needed = cfg.seq_len + 1 + (cfg.seq_len if split == cfg.train_split else 0)
  if num_tokens < needed:
    raise ConfigError(
        f'the {split!r} split has {num_tokens} tokens, fewer than the {needed} that'
        f' data.seq_len={cfg.seq_len} needs; lower data.seq_len or use more text')


def _tokenize(tokenizer, docs: Iterable[str]) -> np.ndarray:
  dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32
  eos = tokenizer.eos_id
  sep = np.array([eos], np.int32) if eos is not None else tokenizer.encode('\n')
  chunks, batch = [], []

  def flush():
    pieces = [p for ids in tokenizer.encode_batch(batch) for p in (ids, sep)]
    chunks.append(np.concatenate(pieces).astype(dtype))
    batch.clear()

  for doc in docs:
    batch.append(doc)
    if len(batch) == _DOCS_PER_CHUNK:
      flush()
  if batch:
    flush()
  tokens = np.concatenate(chunks)
  return tokens if eos is not None else tokens[:len(tokens) - len(sep)]


def num_windows(num_tokens: int, seq_len: int) -> int:
  """Training windows per epoch: non-overlapping, and in range for any offset."""
  return (num_tokens - 1 - seq_len) // seq_len


MAX_TABLE = 1 << 22  # windows an epoch's order is a table for (32 MiB); above, a cipher


@functools.lru_cache(maxsize=4)
def _epoch_order(seed: int, epoch: int, n: int, seq_len: int) -> tuple[np.ndarray | None, int]:
  """Epoch's window order (a table, or None: see _permute), then its offset.

  Both come from default_rng([seed, epoch]). Up to MAX_TABLE windows the
  order is rng.permutation(n); a bigger corpus uses a keyed bijection
  computed per index, so memory and start-up do not grow with the corpus.
  """
  rng = np.random.default_rng([seed, epoch])
  if n > MAX_TABLE:
    return None, int(rng.integers(seq_len))
  perm = rng.permutation(n)
  perm.flags.writeable = False  # shared by the cache
  return perm, int(rng.integers(seq_len))


def _permute(seed: int, epoch: int, n: int, i: np.ndarray) -> np.ndarray:
  """A pseudo-random bijection of [0, n) applied to i: a 4-round Feistel cipher, cycle-walked.

  The cipher permutes [0, 4^h) with 4^h >= n (h bits a half; the round keys
  from default_rng([seed, epoch, 1])); values that land at n or above are
  enciphered again until they fall inside, which keeps it a bijection of [0, n).
  """
  h = max(1, -(-int(n - 1).bit_length() // 2))
  mask = np.uint64((1 << h) - 1)
  keys = np.random.default_rng([seed, epoch, 1]).integers(0, 1 << 62, 4, dtype=np.uint64)

  def encipher(x):
    left, right = x >> np.uint64(h), x & mask
    for k in keys:
      f = right * np.uint64(0x9E3779B97F4A7C15) + k  # (uint64 arithmetic wraps)
      f = (f ^ (f >> np.uint64(29))) & mask
      left, right = right, left ^ f
    return (left << np.uint64(h)) | right

  x = encipher(np.asarray(i, np.uint64))
  while np.any(outside := x >= n):
    x[outside] = encipher(x[outside])
  return x.astype(np.int64)


def _local_rows(batch_size: int, process_index: int, process_count: int) -> np.ndarray:
  if batch_size % process_count:
    raise ConfigError(f'data.batch_size={batch_size} does not divide over {process_count}'
                      ' processes; use a multiple of the process count')
  b = batch_size // process_count
  return process_index * b + np.arange(b)


def _windows(tokens, starts: np.ndarray, seq_len: int) -> dict:
  if hasattr(tokens, 'windows'):  # a prepared dataset's stream (data/dataset.py)
    chunk = tokens.windows(starts, seq_len + 1)
  else:
    chunk = np.asarray(tokens[starts[:, None] + np.arange(seq_len + 1)], np.int32)
  return {'inputs': chunk[:, :-1], 'targets': chunk[:, 1:]}


def train_batch(tokens, step: int, *, batch_size: int, seq_len: int, seed: int,
                process_index: int = 0, process_count: int = 1) -> dict:
  """This process's rows of global batch `step`: int32 inputs/targets [b, seq_len].

  Global sample g = step * batch_size + row is window perm_e[g % n] of epoch
  e = g // n, starting at token shift_e + perm_e[g % n] * seq_len.
  """
  n = num_windows(len(tokens), seq_len)
  if n < 1:
    raise ConfigError(f'data.seq_len={seq_len} leaves no training window in'
                      f' {len(tokens)} tokens; lower data.seq_len')
  if seed < 0:
    raise ConfigError(f'train.seed={seed} must be >= 0')
  g = step * batch_size + _local_rows(batch_size, process_index, process_count)
  epochs, within = np.divmod(g, n)
  starts = np.empty_like(g)
  for e in range(int(epochs[0]), int(epochs[-1]) + 1):  # usually one epoch
    perm, shift = _epoch_order(seed, e, n, seq_len)
    rows = epochs == e
    order = perm[within[rows]] if perm is not None else _permute(seed, e, n, within[rows])
    starts[rows] = shift + order * seq_len
  return _windows(tokens, starts, seq_len)


def eval_batches(tokens, *, batch_size: int, seq_len: int, num_batches: int,
                 process_index: int = 0, process_count: int = 1) -> list[dict]:
  """Up to num_batches fixed batches of windows spread evenly over the split."""
  n = (len(tokens) - 1) // seq_len
  count = min(num_batches, n // batch_size)
  if count < 1:
    raise ConfigError(
        f'the eval split holds {n} windows of data.seq_len={seq_len}, fewer than one'
        f' batch of data.batch_size={batch_size}; lower either or use a longer eval split')
  stride = n // (count * batch_size)  # >= 1: windows never overlap
  rows = _local_rows(batch_size, process_index, process_count)
  return [_windows(tokens, (i * batch_size + rows) * stride * seq_len, seq_len)
          for i in range(count)]
