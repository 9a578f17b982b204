"""A source split cut into pieces: independent units of prepare's work, and their documents.

A piece is a byte range of one local file (data.source=files) or an even
slice of a TFDS split. Pieces are read one document at a time, so a
process's memory does not grow with the corpus; they are numbered in source
order, and a split's stream is its pieces' documents in that order.

  text     one document a file (a file is one piece; a document longer than
           a shard is refused by prepare)
  lines    one document a line; big files are cut at line starts into
           pieces of about PIECE_BYTES (smaller in a small split)
  jsonl    one JSON object a line, the document in its data.text_key field;
           cut like lines
  parquet  the data.text_key column of each row (pyarrow); a file is a piece

Without data.eval_files, the eval split is the last EVAL_HOLDOUT of the
train files' bytes (at a character, line or row boundary) and the train
split the rest.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import glob
import json
import os
from typing import Iterator

from jaxlm.config import ConfigError, DataConfig, DataSource, FileFormat
from jaxlm.data import dataset as dataset_lib
from jaxlm.data import sources

PIECE_BYTES = 16 << 20  # lines and jsonl files are cut into pieces of about this size,
SMALL_SPLIT_PIECES = 16  # or, in a split of less than 16 of them, into 16 pieces
MIN_PIECE_BYTES = 1 << 20  # of at least 1 MB: what keeps 2 to 16 workers evenly busy
EVAL_HOLDOUT = sources.EVAL_HOLDOUT


@dataclasses.dataclass(frozen=True)
class Piece:
  split: str
  index: int  # within the split, in source order
  path: str  # a file, or a TFDS split slice such as 'train[0%:25%]'
  start: int = 0  # byte range of the file (TFDS: 0 and an estimate of its bytes)
  end: int = 0

  @property
  def num_bytes(self) -> int:
    return self.end - self.start

  def describe(self) -> dict:
    return dataclasses.asdict(self)


# --- Which files, and the source's fingerprint ---------------------------------


def split_files(cfg: DataConfig, split: str) -> tuple[str, list[str]]:
  """(setting, sorted non-empty files) that hold `split`; one line if none."""
  held_out = split != cfg.train_split and not cfg.eval_files
  setting, pattern = (('data.train_files', cfg.train_files)
                      if split == cfg.train_split or held_out
                      else ('data.eval_files', cfg.eval_files))
  paths = [p for p in sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
           if os.path.isfile(p)]
  if not paths:
    raise ConfigError(f'{setting}={pattern!r} matches no files (relative to'
                      f' {os.getcwd()}); fix the glob')
  paths = [p for p in paths if os.path.getsize(p)]  # an empty file holds no document
  if not paths:
    raise ConfigError(f'{setting}={pattern!r} matches only empty files; point it at text')
  return setting, paths


def source_parts(cfg: DataConfig, hashes: bool = True, splits: tuple[str, ...] = ()) -> dict:
  """What the source's tokens depend on: for files their names, sizes and content hashes.

  hashes=False leaves out the content hashes, and `splits` limits the splits
  (default: train and eval), for reading rather than fingerprinting.
  """
  splits = splits or (cfg.train_split, cfg.eval_split)
  if cfg.source is DataSource.TFDS:
    prepared = sources.prepared_tfds_info(cfg)  # without TensorFlow, where it can
    if prepared and all(s in prepared['splits'] for s in splits):
      version = prepared['version']
      info = {s: {'split': s, **prepared['splits'][s]} for s in splits}
    else:
      builder = sources.prepared_tfds_builder(cfg)
      version = str(builder.version)
      info = {s: _tfds_split_info(builder, cfg, s) for s in splits}
    return {'source': 'tfds', 'dataset': cfg.dataset, 'version': version,
            'text_key': cfg.text_key, 'splits': info}
  paths = {split: split_files(cfg, split)[1] for split in splits}
  digests = _file_hashes(sorted({p for ps in paths.values() for p in ps})) if hashes else {}
  files = {split: [{'path': os.path.abspath(p), 'bytes': os.path.getsize(p),
                    **({dataset_lib.FILE_HASH: digests[p]} if hashes else {})} for p in ps]
           for split, ps in paths.items()}
  parts = {'source': 'files', 'file_format': cfg.file_format.value, 'splits': files,
           'train_split': cfg.train_split, 'eval_split': cfg.eval_split,
           'holdout': 0.0 if cfg.eval_files else EVAL_HOLDOUT}
  if cfg.file_format in (FileFormat.JSONL, FileFormat.PARQUET):
    parts['text_key'] = cfg.text_key
  return parts


def _file_hashes(paths: list[str]) -> dict[str, str]:
  """Each file's content hash, a thread a core (hashlib and reads release the GIL:
  500 MB in 0.37 s on 2 cores instead of 0.67 s)."""
  threads = max(1, min(len(paths), os.cpu_count() or 1))
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    return dict(zip(paths, pool.map(dataset_lib.file_hash, paths)))


def _tfds_split_info(builder, cfg: DataConfig, split: str) -> dict:
  names = list(builder.info.splits.keys())
  bases = [part.split('[')[0].strip() for part in split.split('+')]
  if any(base not in names for base in bases):
    setting = 'data.train_split' if split == cfg.train_split else 'data.eval_split'
    raise ConfigError(f'{setting}={split!r} is not a split of {cfg.dataset}; it has:'
                      f' {", ".join(names)}')
  info = builder.info.splits[split]
  return {'split': split, 'examples': int(info.num_examples), 'bytes': int(info.num_bytes)}


# --- Cutting a split into pieces -------------------------------------------------


def split_pieces(cfg: DataConfig, split: str, parts: dict) -> list[Piece]:
  """The pieces of `split`, in source order."""
  if parts['source'] == 'tfds':
    info = parts['splits'][split]
    n = max(1, min(64, -(-info['bytes'] // PIECE_BYTES)))
    if '[' in split or '+' in split or n == 1:
      return [Piece(split, 0, split, 0, info['bytes'])]
    step = 100 / n  # (start, end: an estimate of the slice's bytes, for progress)
    return [Piece(split, i, f'{split}[{round(i * step)}%:{round((i + 1) * step)}%]', 0,
                  info['bytes'] // n) for i in range(n)]
  files = parts['splits'][split]
  ranges = [(f['path'], 0, f['bytes']) for f in files]
  if parts['holdout'] and cfg.file_format is FileFormat.PARQUET:
    raise ConfigError('data.file_format=parquet needs data.eval_files (rows are not held'
                      ' out of Parquet files); point it at the eval files')
  if parts['holdout']:
    ranges = _holdout(ranges, eval_part=split != cfg.train_split)
  pieces = []
  cuttable = cfg.file_format in (FileFormat.LINES, FileFormat.JSONL)
  total = sum(end - start for _, start, end in ranges)
  piece_bytes = min(PIECE_BYTES, max(MIN_PIECE_BYTES, total // SMALL_SPLIT_PIECES))
  for path, start, end in ranges:
    step = piece_bytes if cuttable else max(end - start, 1)
    for a in range(start, end, step):
      pieces.append(Piece(split, len(pieces), path, a, min(a + step, end)))
  return pieces


def _holdout(ranges, eval_part: bool):
  """The first 90% (train) or last 10% (eval) of the files' bytes, as byte ranges."""
  total = sum(end for _, _, end in ranges)
  cut = total - int(total * EVAL_HOLDOUT)
  out, at = [], 0
  for path, _, size in ranges:
    local = min(max(cut - at, 0), size)
    a, b = (local, size) if eval_part else (0, local)
    if b > a:
      out.append((path, a, b))
    at += size
  return out


# --- Reading a piece -----------------------------------------------------------


def sample_documents(cfg: DataConfig, pieces: list[Piece], max_bytes: int) -> Iterator[str]:
  """Documents of about max_bytes of UTF-8 text, from the start of every piece in turn.

  Each piece gives the share of what is left of the budget that its size is of
  what is left of the corpus (what one leaves over goes to the ones after it),
  so the sample spans the corpus and reads only itself. With max_bytes at least
  the pieces' bytes: every document.
  """
  left, rest = max_bytes, sum(max(p.num_bytes, 1) for p in pieces)
  for piece in pieces:
    size = max(piece.num_bytes, 1)
    share, taken = left * size / rest, 0
    for doc in piece_documents(cfg, piece):
      if taken >= share:
        break
      yield doc
      taken += len(doc.encode('utf-8'))
    left, rest = left - taken, rest - size


def piece_documents(cfg: DataConfig, piece: Piece) -> Iterator[str]:
  """The piece's documents, one at a time."""
  if cfg.source is DataSource.TFDS:
    yield from sources.tfds_documents(cfg, piece.path)
  elif cfg.file_format is FileFormat.TEXT:
    yield _text(piece)
  elif cfg.file_format is FileFormat.PARQUET:
    yield from _parquet(cfg, piece)
  else:
    for number, line in _lines(piece):
      if cfg.file_format is FileFormat.LINES:
        if line:
          yield line
        continue
      yield _json_text(cfg, piece.path, number, line)


def _text(piece: Piece) -> str:
  with open(piece.path, 'rb') as f:
    f.seek(piece.start)
    raw = f.read(piece.num_bytes)
  if piece.start:  # a held-out cut inside the file: start at a character
    raw = raw.lstrip(bytes(range(0x80, 0xC0)))
  if piece.end < os.path.getsize(piece.path):  # end before the next character's start
    with open(piece.path, 'rb') as f:
      f.seek(piece.end)
      tail = f.read(4)
    raw += tail[:len(tail) - len(tail.lstrip(bytes(range(0x80, 0xC0))))]
  return _decode(raw, piece.path, piece.start)


def _decode(raw: bytes, path: str, offset: int) -> str:
  try:
    return raw.decode('utf-8')
  except UnicodeDecodeError as e:
    raise ConfigError(f'{path} is not UTF-8 (byte {offset + e.start}:'
                      f' {raw[e.start:e.start + 1]!r}); convert it to UTF-8 or leave it out'
                      ' of the glob') from None


def _first_line(f, piece: Piece) -> int:
  """The offset of the first line that starts in [start, end) (or past it), f there."""
  at = piece.start
  if at:
    f.seek(at - 1)
    if f.read(1) != b'\n':  # inside a line: it belongs to the piece before
      at += len(f.readline())
  f.seek(at)
  return at


def _lines(piece: Piece) -> Iterator[tuple[int, str]]:
  """(byte offset, line without its newline) of each line that starts in [start, end)."""
  with open(piece.path, 'rb') as f:
    at = _first_line(f, piece)
    while at < piece.end:
      raw = f.readline()
      if not raw:
        break
      yield at, _decode(raw, piece.path, at).rstrip('\r\n')
      at += len(raw)


def line_block(piece: Piece) -> bytes:
  """The bytes of the lines `_lines` gives, newlines included: those starting in [start, end)."""
  with open(piece.path, 'rb') as f:
    at = _first_line(f, piece)
    if at >= piece.end:
      return b''
    f.seek(piece.end - 1)  # the rest of a line that starts before end is the piece's too
    end = piece.end if f.read(1) == b'\n' else piece.end + len(f.readline())
    f.seek(at)
    return f.read(end - at)  # (one read: appending the rest copied the piece)


def _json_text(cfg: DataConfig, path: str, offset: int, line: str) -> str:
  try:
    row = json.loads(line)
  except json.JSONDecodeError as e:
    raise ConfigError(f'{path}: the line at byte {offset} is not JSON ({e.msg}); fix the'
                      ' line, or use data.file_format=lines for plain text') from None
  if not isinstance(row, dict) or not isinstance(row.get(cfg.text_key), str):
    raise ConfigError(f'{path}: the line at byte {offset} has no text field'
                      f' data.text_key={cfg.text_key!r}; set data.text_key to its field')
  return row[cfg.text_key]


def _parquet(cfg: DataConfig, piece: Piece) -> Iterator[str]:
  try:
    import pyarrow.parquet as pq
  except ImportError:
    raise ConfigError('data.file_format=parquet needs pyarrow; pip install pyarrow, or'
                      ' convert the files to jsonl') from None
  try:
    file = pq.ParquetFile(piece.path)
  except Exception as e:  # noqa: BLE001  (pyarrow raises ArrowInvalid and others)
    raise ConfigError(f'{piece.path} is not a Parquet file ({str(e)[:100]}); fix the glob or'
                      ' data.file_format') from None
  if cfg.text_key not in file.schema_arrow.names:
    raise ConfigError(f'{piece.path} has no column data.text_key={cfg.text_key!r}; it has:'
                      f' {", ".join(file.schema_arrow.names)}')
  for batch in file.iter_batches(columns=[cfg.text_key], batch_size=4096):
    for text in batch.column(0).to_pylist():
      if text:
        yield text
