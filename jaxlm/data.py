"""Text data: documents from TFDS or local files, token streams, batches.

A split becomes one flat token stream (documents joined by '\\n', or by the
tokenizer's EOS id), cached as `tokens_{split}.npy` in the run folder.
Training batches are a pure function of (seed, step): each epoch visits every
non-overlapping window of the stream once in a seeded random order, shifted
by a seeded offset so windows differ between epochs. Restoring the step
therefore restores the data position exactly.
"""

from __future__ import annotations

import functools
import glob
import os
from typing import Iterator

import numpy as np

from jaxlm.config import ConfigError, DataConfig, DataSource

EVAL_HOLDOUT = 0.1  # files source without eval_files: last 10% of the text


def _tfds_builder(cfg: DataConfig):
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  import tensorflow as tf
  import tensorflow_datasets as tfds
  tf.config.set_visible_devices([], 'GPU')  # TF only reads data here
  if cfg.manual_dir and not (os.path.isdir(cfg.manual_dir) and os.listdir(cfg.manual_dir)):
    raise ConfigError(
        f'data.manual_dir={cfg.manual_dir} does not exist or is empty; point it at'
        ' the folder holding the downloaded files, or unset it to download')
  try:
    builder = tfds.builder(cfg.dataset, data_dir=cfg.tfds_data_dir or None)
  except tfds.core.registered.DatasetNotFoundError:
    raise ConfigError(
        f'data.dataset={cfg.dataset!r} is not a TFDS dataset; see'
        ' tfds.list_builders() (e.g. tiny_shakespeare, lm1b)') from None
  download_config = tfds.download.DownloadConfig(manual_dir=cfg.manual_dir or None)
  builder.download_and_prepare(download_config=download_config)
  return builder


def _tfds_documents(cfg: DataConfig, split: str) -> Iterator[str]:
  import tensorflow_datasets as tfds
  builder = _tfds_builder(cfg)
  if split not in builder.info.splits:
    setting = 'data.train_split' if split == cfg.train_split else 'data.eval_split'
    raise ConfigError(f'{setting}={split!r} is not a split of {cfg.dataset}; it has:'
                      f' {", ".join(builder.info.splits)}')
  if cfg.text_key not in builder.info.features:
    raise ConfigError(f'data.text_key={cfg.text_key!r} is not a feature of {cfg.dataset};'
                      f' it has: {", ".join(builder.info.features)}')
  for example in tfds.as_numpy(builder.as_dataset(split=split)):
    yield example[cfg.text_key].decode('utf-8')


def _read_text(path: str) -> str:
  with open(path, 'rb') as f:
    raw = f.read()
  try:
    return raw.decode('utf-8')
  except UnicodeDecodeError as e:
    raise ConfigError(f'{path} is not UTF-8 (bad byte at offset {e.start});'
                      ' convert it to UTF-8 or remove it from the glob') from None


def _file_documents(cfg: DataConfig, split: str) -> Iterator[str]:
  is_train = split == cfg.train_split
  pattern = cfg.train_files if is_train or not cfg.eval_files else cfg.eval_files
  setting = 'data.train_files' if pattern == cfg.train_files else 'data.eval_files'
  paths = sorted(glob.glob(os.path.expanduser(pattern)))
  if not paths:
    raise ConfigError(f'{setting}={pattern!r} matches no files; check the glob')
  texts = [_read_text(p) for p in paths]
  if cfg.eval_files:
    yield from texts
    return
  whole = '\n'.join(texts)
  cut = int(len(whole) * (1 - EVAL_HOLDOUT))
  yield whole[:cut] if is_train else whole[cut:]


def documents(cfg: DataConfig, split: str) -> Iterator[str]:
  """The documents (strings) of a split, from TFDS or local files."""
  if cfg.source is DataSource.TFDS:
    return _tfds_documents(cfg, split)
  return _file_documents(cfg, split)


def tokenize_split(cfg: DataConfig, tokenizer, split: str, cache_dir: str) -> np.ndarray:
  """The split as one token stream, cached as tokens_{split}.npy."""
  path = os.path.join(cache_dir, f'tokens_{split}.npy')
  if os.path.exists(path):
    return np.load(path, mmap_mode='r')
  pieces = []
  newline = None if tokenizer.eos_id is not None else tokenizer.encode('\n')
  for doc in documents(cfg, split):
    pieces.append(tokenizer.encode(doc))
    pieces.append(np.array([tokenizer.eos_id], np.int32) if newline is None else newline)
  if pieces:
    pieces.pop()  # no separator after the last document
  stream = np.concatenate(pieces) if pieces else np.zeros((0,), np.int32)
  if len(stream) < cfg.seq_len + 2:
    raise ConfigError(
        f'the {split} split has {len(stream)} tokens, too few for data.seq_len='
        f'{cfg.seq_len}; lower data.seq_len or use more text')
  dtype = np.uint16 if tokenizer.vocab_size <= 2 ** 16 else np.uint32
  stream = stream.astype(dtype)
  tmp = path + '.tmp.npy'
  np.save(tmp, stream)
  os.replace(tmp, path)  # a cache file is complete or absent
  return stream


def num_windows(num_tokens: int, seq_len: int) -> int:
  """Non-overlapping windows of seq_len+1 tokens that fit any epoch offset."""
  return (num_tokens - 1 - seq_len) // seq_len


@functools.lru_cache(maxsize=4)
def _epoch_order(seed: int, epoch: int, n: int) -> tuple[np.ndarray, int]:
  rng = np.random.default_rng([seed, epoch])
  perm = rng.permutation(n)
  return perm, int(rng.integers(0, 1 << 30))


def _windows(tokens, starts: np.ndarray, seq_len: int) -> dict:
  idx = starts[:, None] + np.arange(seq_len + 1)[None, :]
  chunk = np.asarray(tokens[idx], dtype=np.int32)
  return {'inputs': chunk[:, :-1], 'targets': chunk[:, 1:]}


def train_batch(tokens, step: int, *, batch_size: int, seq_len: int, seed: int,
                process_index: int = 0, process_count: int = 1) -> dict:
  """This process's rows of global batch `step`: int32 inputs/targets [b, L]."""
  n = num_windows(len(tokens), seq_len)
  if n < 1:
    raise ConfigError(f'data.seq_len={seq_len} leaves no training window; lower it')
  b = batch_size // process_count
  g = step * batch_size + process_index * b + np.arange(b)
  epochs, within = np.divmod(g, n)
  starts = np.empty(b, np.int64)
  for e in np.unique(epochs):
    perm, shift = _epoch_order(seed, int(e), n)
    rows = epochs == e
    starts[rows] = shift % seq_len + perm[within[rows]] * seq_len
  return _windows(tokens, starts, seq_len)


def eval_batches(tokens, *, batch_size: int, seq_len: int, num_batches: int,
                 process_index: int = 0, process_count: int = 1) -> list[dict]:
  """Fixed batches of consecutive windows from the start of the split."""
  n = (len(tokens) - 1) // seq_len
  count = min(num_batches, n // batch_size)
  if count < 1:
    raise ConfigError(
        f'the eval split holds {n} windows of data.seq_len={seq_len}, fewer than one'
        f' batch of data.batch_size={batch_size}; lower them or use more eval text')
  b = batch_size // process_count
  out = []
  for i in range(count):
    g = i * batch_size + process_index * b + np.arange(b)
    out.append(_windows(tokens, g * seq_len, seq_len))
  return out
