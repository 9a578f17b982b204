"""Labelled texts for classification: CSV files or TFDS, split, tokenized, batched.

Two pools come from the source: the training pool (data.train_files or
data.train_split) and the eval pool (data.eval_files or data.eval_split;
the training pool when those are ''). The eval split is a class-stratified
`data.eval_holdout` fraction of the eval pool, chosen with train.seed; the
rest of a separate eval pool joins the training examples.

Texts become right-padded token rows of data.max_length with their lengths.
A training batch is a pure function of (seed, step): each epoch visits every
example once in a seeded order, so restoring the step restores the data
position. TensorFlow is imported only for data.source=tfds.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import os
from typing import Sequence

import numpy as np

from jaxlm.data import sources
from jaxlm.config import LabelledDataConfig, LabelledSource, Truncation, split_paths
from jaxlm.config import ConfigError

PAD_ID = 0  # any id works: causal attention keeps pads after the text from changing it


@dataclasses.dataclass(frozen=True)
class Examples:
  texts: tuple[str, ...]
  labels_N: np.ndarray  # int32 class ids


@dataclasses.dataclass(frozen=True)
class Encoded:
  tokens_NL: np.ndarray  # int32, right-padded with PAD_ID
  lengths_N: np.ndarray  # int32, in [1, L]
  labels_N: np.ndarray  # int32

  def __len__(self) -> int:
    return len(self.labels_N)


def concat(parts: Sequence[Examples]) -> Examples:
  return Examples(tuple(t for p in parts for t in p.texts),
                  np.concatenate([p.labels_N for p in parts]).astype(np.int32))


def subset(ex: Examples, idx) -> Examples:
  return Examples(tuple(ex.texts[i] for i in idx), ex.labels_N[idx])


# --- CSV ---------------------------------------------------------------------


def read_csv(path: str, *, label_column: int, text_columns: Sequence[int],
             labels: Sequence[str], skip_header: bool = False) -> Examples:
  """The (text, label) rows of one CSV file; text columns are joined with '\\n'.

  Every row has as many columns as the first (an extra column is refused, not
  ignored). Errors name the file and the line where the offending record starts.
  """
  try:
    with open(path, 'rb') as f:
      raw = f.read()
  except FileNotFoundError:
    raise ConfigError(f'{path}: no such file (relative to {os.getcwd()});'
                      ' fix the path in data.train_files / data.eval_files') from None
  except IsADirectoryError:
    raise ConfigError(f'{path} is a folder; name the CSV file(s) in it') from None
  try:
    text = raw.decode('utf-8-sig')
  except UnicodeDecodeError as e:
    line = raw.count(b'\n', 0, e.start) + 1
    raise ConfigError(f'{path}:{line}: not UTF-8 (byte {raw[e.start:e.start + 1]!r});'
                      ' convert the file to UTF-8') from None
  class_of = {value: i for i, value in enumerate(labels)}
  needed = max(label_column, *text_columns) + 1
  texts, ids = [], []
  reader = csv.reader(io.StringIO(text, newline=''), strict=True)
  line = 1
  width = None  # (line, columns) of the first data row: every row must match it
  try:
    for row in reader:
      start, line = line, reader.line_num + 1
      if not row or (skip_header and start == 1):
        continue
      if len(row) < needed:
        raise ConfigError(
            f'{path}:{start}: {len(row)} column(s), but data.csv_label_column/'
            f'csv_text_columns need {needed}; check the file or those settings')
      width = width or (start, len(row))
      if len(row) != width[1]:  # an unquoted comma shifts every column after it
        raise ConfigError(
            f'{path}:{start}: {len(row)} columns, but line {width[0]} has {width[1]};'
            ' quote fields that hold commas, or make every row the same width')
      value = row[label_column].strip()
      if value not in class_of:
        raise ConfigError(
            f'{path}:{start}: label {value!r} is not one of data.csv_labels'
            f' ({", ".join(labels)}); fix the row or the setting')
      joined = '\n'.join(row[c].strip() for c in text_columns if row[c].strip())
      if not joined:
        raise ConfigError(f'{path}:{start}: empty text in column(s) {tuple(text_columns)};'
                          ' remove the row or fix data.csv_text_columns')
      texts.append(joined)
      ids.append(class_of[value])
  except csv.Error as e:
    raise ConfigError(f'{path}:{reader.line_num}: malformed CSV ({e});'
                      ' fix the quoting of that record') from None
  if not texts:
    raise ConfigError(f'{path}: holds no rows; point data.train_files / data.eval_files'
                      ' at a CSV with data')
  return Examples(tuple(texts), np.asarray(ids, np.int32))


def _csv_files(cfg: LabelledDataConfig, paths: str) -> Examples:
  return concat([read_csv(p, label_column=cfg.csv_label_column,
                          text_columns=cfg.csv_text_columns, labels=cfg.csv_labels,
                          skip_header=cfg.csv_skip_header)
                 for p in split_paths(paths)])


# --- TFDS --------------------------------------------------------------------


def _import_tfds():
  return sources.import_tfds(instead='data.source=csv')


@functools.cache
def _tfds_builder(dataset: str, data_dir: str):
  builder = sources.tfds_builder(dataset, data_dir, 'data.tfds_dataset', instead='data.source=csv')
  sources.prepare_tfds(builder, '', 'set data.tfds_data_dir to where it is prepared, or use'
                  ' data.source=csv with local files')
  return builder


def _tfds_split(cfg: LabelledDataConfig, split: str, setting: str) -> Examples:
  tfds = _import_tfds()
  builder = _tfds_builder(cfg.tfds_dataset, cfg.tfds_data_dir)
  features = builder.info.features
  for key in cfg.tfds_text_keys + (cfg.tfds_label_key,):
    if key not in features:
      raise ConfigError(f'{key!r} (data.tfds_text_keys / tfds_label_key) is not a feature'
                        f' of {cfg.tfds_dataset}; it has: {", ".join(features.keys())}')
  names = tuple(getattr(features[cfg.tfds_label_key], 'names', ()))
  if len(names) != len(cfg.class_names):
    raise ConfigError(
        f'{cfg.tfds_dataset} has {len(names)} classes ({", ".join(names)}) but'
        f' data.class_names has {len(cfg.class_names)}; list one name per class')
  bases = [part.split('[')[0].strip() for part in split.split('+')]
  known = builder.info.splits  # empty only under tfds.testing.mock_data
  if known and any(base not in known for base in bases):
    raise ConfigError(f'{setting}={split!r} is not a split of {cfg.tfds_dataset};'
                      f' it has: {", ".join(builder.info.splits.keys())}')
  texts, labels = [], []
  for example in tfds.as_numpy(builder.as_dataset(split=split)):
    parts = [example[k].decode('utf-8').strip() for k in cfg.tfds_text_keys]
    joined = '\n'.join(p for p in parts if p)
    if joined:  # an example without text carries nothing to classify
      texts.append(joined)
      labels.append(int(example[cfg.tfds_label_key]))
  if not texts:
    raise ConfigError(f'{setting}={split!r} of {cfg.tfds_dataset} holds no text in'
                      f' data.tfds_text_keys={cfg.tfds_text_keys}')
  return Examples(tuple(texts), np.asarray(labels, np.int32))


# --- Splits ------------------------------------------------------------------


def stratified_split(labels_N, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(held-out, rest) index arrays, sorted: round(fraction * n_c) of each class c."""
  labels_N = np.asarray(labels_N)
  rng = np.random.default_rng(seed)
  held = []
  for c in np.unique(labels_N):
    idx = np.flatnonzero(labels_N == c)
    held.append(rng.permutation(idx)[:int(round(fraction * len(idx)))])
  held = np.sort(np.concatenate(held))
  rest = np.setdiff1d(np.arange(len(labels_N)), held)
  return held, rest


def load_examples(cfg: LabelledDataConfig, seed: int) -> tuple[Examples, Examples]:
  """(train, eval) examples per the holdout rule in the module docstring."""
  if cfg.source is LabelledSource.CSV:
    train_pool = _csv_files(cfg, cfg.train_files)
    eval_pool = _csv_files(cfg, cfg.eval_files) if split_paths(cfg.eval_files) else None
  else:
    train_pool = _tfds_split(cfg, cfg.train_split, 'data.train_split')
    eval_pool = (_tfds_split(cfg, cfg.eval_split, 'data.eval_split')
                 if cfg.eval_split else None)
  pool = train_pool if eval_pool is None else eval_pool
  held, rest = stratified_split(pool.labels_N, cfg.eval_holdout, seed)
  if not len(held):
    raise ConfigError(f'data.eval_holdout={cfg.eval_holdout} of {len(pool.labels_N)}'
                      ' examples holds out none; raise it')
  if eval_pool is None:
    return subset(train_pool, rest), subset(pool, held)
  return concat([train_pool, subset(eval_pool, rest)]), subset(eval_pool, held)


# --- Tokens and batches ------------------------------------------------------


def encode(tokenizer, ex: Examples, max_length: int, truncation: Truncation) -> Encoded:
  """Token rows [N, max_length], right-padded, cut to max_length as `truncation` says."""
  n = len(ex.texts)
  tokens_NL = np.full((n, max_length), PAD_ID, np.int32)
  lengths_N = np.zeros(n, np.int32)
  for i, ids in enumerate(tokenizer.encode_batch(ex.texts)):
    ids = ids[:max_length] if truncation is Truncation.KEEP_START else ids[-max_length:]
    if not len(ids):
      raise ConfigError(f'text {i} ({ex.texts[i][:40]!r}) encodes to no tokens;'
                        ' remove it from the data')
    tokens_NL[i, :len(ids)] = ids
    lengths_N[i] = len(ids)
  return Encoded(tokens_NL, lengths_N, ex.labels_N.astype(np.int32))


def _rows(data: Encoded, rows, weights_B, process_index: int, process_count: int) -> dict:
  per = len(rows) // process_count
  local = slice(process_index * per, (process_index + 1) * per)
  rows = rows[local]
  return {'tokens': data.tokens_NL[rows], 'lengths': data.lengths_N[rows],
          'labels': data.labels_N[rows], 'weights': weights_B[local]}


@functools.lru_cache(maxsize=4)
def _epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(n)


def labelled_train_batch(data: Encoded, step: int, *, batch_size: int, seed: int,
                process_index: int = 0, process_count: int = 1) -> dict:
  """This process's rows of global batch `step`: a pure function of (seed, step)."""
  n = len(data)
  i_B = step * batch_size + np.arange(batch_size)
  rows = np.array([_epoch_order(n, seed, int(i // n))[i % n] for i in i_B])
  return _rows(data, rows, np.ones(batch_size, np.float32), process_index, process_count)


def labelled_eval_batches(data: Encoded, *, batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> list[dict]:
  """Every example once, in order; the last batch is filled with weight-0 rows."""
  n = len(data)
  padded = -(-n // batch_size) * batch_size
  rows = np.minimum(np.arange(padded), n - 1)
  weights = (np.arange(padded) < n).astype(np.float32)
  return [_rows(data, rows[s:s + batch_size], weights[s:s + batch_size],
                process_index, process_count) for s in range(0, padded, batch_size)]
