"""A prepared dataset folder: the one module that knows its layout, and its reader.

  DATASET/manifest.json          written last, once every piece is complete: the format
                                 version, the fingerprint and its parts, each split's shards
  DATASET/plan.json              what is being prepared (fingerprint, pieces); written first
  DATASET/tokenizer.json (.model) the tokenizer, as in a run folder (data/tokenizers.py)
  DATASET/SPLIT/PPPPP-KKK.bin    tokens of piece P's shard K: raw uint8, little-endian
                                 uint16 or uint32 (by vocabulary size)
  DATASET/SPLIT/PPPPP-KKK.idx    int64: the end offset of each document in that shard
  DATASET/SPLIT/PPPPP.done.json  piece P's shards, documents and tokens: it is complete

Every document's tokens are followed by the separator (the tokenizer's EOS
id, or the tokens of '\\n' for tokenizers without one). A split's token stream
is its shards joined in (piece, shard) order; without an EOS id the stream
ends before the last separator, so that it is exactly the stream
jaxlm/data/lm.py builds in memory. A folder without manifest.json is never
read: a half-written dataset cannot pass for a complete one.

The fingerprint hashes what the tokens are a function of: the source (file
names, sizes and content hashes; or TFDS name, version and split sizes), the
tokenizer (its settings, or the hash of a given one) and the format version.

Reading is by positioned reads (os.pread) for local folders, and by ranged
reads through etils.epath for object stores (gs://): a process reads only
the rows it is asked for, so start-up and memory do not grow with the corpus.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import os
from typing import Any

import numpy as np
import xxhash
from etils import epath

from jaxlm import rundir
from jaxlm.config import ConfigError

FORMAT_VERSION = 1
MANIFEST_FILE = 'manifest.json'
PLAN_FILE = 'plan.json'


# --- Names -------------------------------------------------------------------


def shard_file(root, split: str, piece: int, shard: int) -> epath.Path:
  return epath.Path(root) / split / f'{piece:05d}-{shard:03d}.bin'


def index_file(root, split: str, piece: int, shard: int) -> epath.Path:
  return epath.Path(root) / split / f'{piece:05d}-{shard:03d}.idx'


def done_file(root, split: str, piece: int) -> epath.Path:
  return epath.Path(root) / split / f'{piece:05d}.done.json'


def manifest_file(root) -> epath.Path:
  return epath.Path(root) / MANIFEST_FILE


def plan_file(root) -> epath.Path:
  return epath.Path(root) / PLAN_FILE


def token_dtype(vocab_size: int) -> np.dtype:
  """The narrowest of uint8 (byte, most char vocabularies), uint16 and uint32."""
  if vocab_size <= 1 << 8:  # half the bytes to write and read: byte prepare is disk-bound
    return np.dtype('u1')
  return np.dtype('<u2') if vocab_size <= 1 << 16 else np.dtype('<u4')


# --- Fingerprints ------------------------------------------------------------


def fingerprint(parts: dict) -> str:
  """A short hash of the fingerprint's parts (canonical JSON)."""
  return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


FILE_HASH = 'xxh3_128'  # the source files' content hash in a fingerprint


def file_hash(path: str, chunk: int = 1 << 22) -> str:
  """xxh3_128 of a file's bytes, read in 4 MiB chunks.

  Not a cryptographic hash: it tells changed text from the same, at about
  5 GB/s a core (blake2b: 0.8 here, 1.3 s of a 2 GB corpus's prepare on 2 cores).
  """
  h = xxhash.xxh3_128()
  with epath.Path(path).open('rb') as f:
    while block := f.read(chunk):
      h.update(block)
  return h.hexdigest()


def what_changed(old: Any, new: Any, where: str = '') -> str | None:
  """The first difference between two fingerprint parts, in words; None if equal."""
  if isinstance(old, dict) and isinstance(new, dict):
    for key in sorted(set(old) | set(new)):
      change = what_changed(old.get(key), new.get(key), f'{where}.{key}' if where else key)
      if change:
        return change
    return None
  if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
    for i, (a, b) in enumerate(zip(old, new)):
      change = what_changed(a, b, f'{where}[{i}]')
      if change:
        return change
    return None
  if old != new:
    return f'{where} was {_short(old)}, now {_short(new)}'
  return None


def _short(value) -> str:
  text = json.dumps(value)
  return text if len(text) <= 80 else text[:77] + '...'


# --- The manifest ------------------------------------------------------------


def write_json(file: epath.Path, value: dict) -> None:
  file.parent.mkdir(parents=True, exist_ok=True)
  rundir.write_bytes(file, json.dumps(value, indent=1, sort_keys=True).encode())


def read_json(file: epath.Path) -> dict | None:
  """A JSON file's object, or None when absent or unreadable (then it is rewritten)."""
  try:
    value = json.loads(epath.Path(file).read_text())
  except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
    return None
  return value if isinstance(value, dict) else None


def read_manifest(root) -> dict:
  """The manifest of a complete dataset folder; one line if it is not one."""
  root = epath.Path(root)
  if not root.exists():
    raise ConfigError(f'data.dataset_dir={root} does not exist; prepare it with'
                      f' python -m jaxlm.prepare --config=... --out={root}')
  manifest = read_json(manifest_file(root))
  if manifest is None:
    what = ('an unfinished prepare (plan.json but no manifest.json)'
            if plan_file(root).exists() else 'no manifest.json')
    raise ConfigError(f'data.dataset_dir={root} holds {what}; run python -m jaxlm.prepare'
                      f' with its --config and --out={root} to complete it')
  if manifest.get('format') != FORMAT_VERSION:
    raise ConfigError(f'data.dataset_dir={root} was written in dataset format'
                      f' {manifest.get("format")}; this jaxlm reads format {FORMAT_VERSION}:'
                      ' prepare it again into a new --out')
  return manifest


# --- Reading -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Shard:
  file: str
  index: str
  tokens: int
  documents: int


class TokenStream:
  """One split's tokens over its shards, read lazily: len(), [a:b], windows(starts, n)."""

  def __init__(self, root, shards: list[Shard], dtype: np.dtype, drop_last: int):
    self._root = epath.Path(root)
    self._shards = shards
    self.dtype = np.dtype(dtype)
    self._ends = np.cumsum([s.tokens for s in shards]).tolist()
    self._len = (self._ends[-1] if shards else 0) - drop_last
    self._maps: dict[int, Any] = {}

  def __len__(self) -> int:
    return self._len

  @property
  def num_documents(self) -> int:
    return sum(s.documents for s in self._shards)

  def _shard(self, i: int):
    if i not in self._maps:
      file = self._root / self._shards[i].file
      if rundir.is_local(file):
        self._maps[i] = _LocalFile(os.fspath(file), self.dtype)
      else:
        self._maps[i] = _RangedFile(file, self.dtype)
    return self._maps[i]

  def __getitem__(self, item) -> np.ndarray:
    if not isinstance(item, slice) or item.step not in (None, 1):
      raise TypeError('a TokenStream takes contiguous slices [a:b]')
    start, stop, _ = item.indices(self._len)
    out = np.empty(max(stop - start, 0), self.dtype)
    at = start
    while at < stop:
      i = bisect.bisect_right(self._ends, at)
      first = self._ends[i - 1] if i else 0
      n = min(stop, self._ends[i]) - at
      out[at - start:at - start + n] = self._shard(i)[at - first:at - first + n]
      at += n
    return out

  def __array__(self, dtype=None, copy=None):
    tokens = self[0:self._len]
    return tokens if dtype is None else tokens.astype(dtype)

  def windows(self, starts, length: int) -> np.ndarray:
    """int32 [len(starts), length]: tokens[s:s+length] for each start."""
    return np.stack([self[int(s):int(s) + length] for s in starts]).astype(np.int32)

  def doc_offsets(self) -> np.ndarray:
    """int64 [D+1]: document d is tokens[offsets[d]:offsets[d+1]] (with its separator)."""
    ends, base = [np.zeros(1, np.int64)], 0
    for s in self._shards:
      raw = (self._root / s.index).read_bytes()
      ends.append(np.frombuffer(raw, '<i8') + base)
      base += s.tokens
    offsets = np.concatenate(ends)
    return np.minimum(offsets, self._len)


class _LocalFile:
  """A local shard read with positioned reads (pread): only the bytes asked for.

  Not np.memmap: touching a mapping maps the kernel's readahead around each
  window too (about 190 KB a 130-byte window here), which counts in the
  process's memory and grows with how much of the corpus a run has visited.
  """

  def __init__(self, path: str, dtype: np.dtype):
    self._fd = os.open(path, os.O_RDONLY)
    self._dtype = dtype

  def __getitem__(self, item: slice) -> np.ndarray:
    size = self._dtype.itemsize
    raw = os.pread(self._fd, (item.stop - item.start) * size, item.start * size)
    return np.frombuffer(raw, self._dtype)

  def __del__(self):
    os.close(self._fd)


class _RangedFile:
  """A remote shard read by byte ranges (as the local one, through etils.epath)."""

  def __init__(self, file: epath.Path, dtype: np.dtype):
    self._file, self._dtype = file, dtype

  def __getitem__(self, item: slice) -> np.ndarray:
    size = self._dtype.itemsize
    with self._file.open('rb') as f:
      f.seek(item.start * size)
      raw = f.read((item.stop - item.start) * size)
    return np.frombuffer(raw, self._dtype)


def open_split(root, split: str, manifest: dict | None = None) -> TokenStream:
  """The token stream of a complete dataset folder's split."""
  manifest = manifest or read_manifest(root)
  splits = manifest['splits']
  if split not in splits:
    raise ConfigError(f'data.dataset_dir={root} holds the splits {", ".join(sorted(splits))},'
                      f' not {split!r}; prepare it with that split')
  s = splits[split]
  shards = [Shard(**shard) for shard in s['shards']]
  drop = manifest['separator_tokens'] if manifest['eos_id'] is None and shards else 0
  return TokenStream(root, shards, np.dtype(manifest['dtype']), drop)
