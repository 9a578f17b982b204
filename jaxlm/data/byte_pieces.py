"""Byte-tokenized pieces of `lines` and `jsonl` files in a few vectorized passes.

With the byte tokenizer a document's tokens are its UTF-8 bytes, then the
separator "\\n". Going line by line in Python (read, decode, parse, encode,
concatenate) runs at about 10-20 MB/s a core; the byte tokenizer itself
encodes at over 100. `tokens(cfg, piece)` reads a piece's lines as one block
and gives the same tokens without a loop per document:

  lines: the block itself, less what the line-by-line path drops: empty
         lines and the "\\r"s that end a line (up to MAX_RETURNS a line);
  jsonl: the text column that pyarrow's JSON reader (C++) parses, when every
         line is an object whose text field is a string and no escape is a lone
         surrogate, which pyarrow refuses and json.loads keeps (else the
         line-by-line path, which also names a bad line).

None means "take the line-by-line path": its tokens are the same, only slower,
and its errors are the one-line ones. tests/data/prepare_test.py checks both
paths give the same bytes.
"""

from __future__ import annotations

import importlib.util
import io

import numpy as np

from jaxlm.config import DataConfig, DataSource, FileFormat, TokenizerKind
from jaxlm.data import pieces as pieces_lib

NEWLINE = 10
RETURN = 13
MAX_RETURNS = 8  # "\r"s ending one line that `lines` pieces strip in passes
BLOCK_BYTES = 4 << 20  # pyarrow's JSON reader parses 16 MB 1.3x faster than in 1 MB blocks

Blocks = list[tuple[np.ndarray, np.ndarray]]  # (uint8 tokens, each document's length)


def applies(cfg: DataConfig, tokenizer: TokenizerKind) -> bool:
  """Whether pieces of cfg's source tokenized by `tokenizer` take this path.

  Every valid piece of lines does; a JSONL piece needs pyarrow, and gives way
  where it meets a line pyarrow reads otherwise than json.loads.
  """
  if tokenizer is not TokenizerKind.BYTE or cfg.source is not DataSource.FILES:
    return False
  return (cfg.file_format is FileFormat.LINES or cfg.file_format is FileFormat.JSONL
          and importlib.util.find_spec('pyarrow') is not None)


def tokens(cfg: DataConfig, piece: pieces_lib.Piece) -> Blocks | None:
  """The piece's tokens (a "\\n" after each document) in blocks, or None: the slow path."""
  if not applies(cfg, TokenizerKind.BYTE):
    return None
  raw = pieces_lib.line_block(piece)
  if not raw.isascii():  # (ASCII is UTF-8; checked without decoding a copy, 7x faster)
    try:
      raw.decode('utf-8')
    except UnicodeDecodeError:
      return None  # the slow path names the first bad line or byte
  if not raw:
    return []
  if not raw.endswith(b'\n'):
    raw += b'\n'
  buf = np.frombuffer(raw, np.uint8)
  if cfg.file_format is FileFormat.JSONL:
    return _jsonl(cfg, raw, int(np.count_nonzero(buf == NEWLINE)))
  # (numpy, not `b'\n\n' in raw`: 7 ms for 16 MB instead of 32)
  ends = np.flatnonzero(buf == NEWLINE) + 1  # each line's end, after its "\n"
  lengths = np.diff(ends, prepend=0)
  if (lengths == 1).any() or (buf[ends[lengths > 1] - 2] == RETURN).any():
    return _dropped(buf)
  return [(buf, lengths)]


def _dropped(buf: np.ndarray) -> Blocks | None:
  """The lines of buf without their trailing "\\r"s, the empty ones left out, as the
  line-by-line path gives them (`line.rstrip('\\r\\n')`, then only non-empty lines)."""
  for _ in range(MAX_RETURNS + 1):  # a pass per "\r" a line ends in (Windows: one)
    returns = np.flatnonzero((buf[:-1] == RETURN) & (buf[1:] == NEWLINE))
    if not returns.size:
      break
    buf = np.delete(buf, returns)
  else:
    return None  # a line ending in more "\r"s than that: the line-by-line path
  ends = np.flatnonzero(buf == NEWLINE) + 1
  lengths = np.diff(ends, prepend=0)
  empty = lengths == 1  # a "\n" alone
  return [(np.delete(buf, ends[empty] - 1), lengths[~empty])]


def _jsonl(cfg: DataConfig, raw: bytes, lines: int) -> Blocks | None:
  try:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pa_json
  except ImportError:
    return None
  try:  # (a lone surrogate escape, which json.loads keeps, is an ArrowInvalid here)
    table = pa_json.read_json(io.BytesIO(raw), read_options=pa_json.ReadOptions(
        use_threads=False, block_size=BLOCK_BYTES))
  except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
    return None
  if table.num_rows != lines or cfg.text_key not in table.column_names:
    return None  # an empty line (which pyarrow skips): the slow path names it
  column = table.column(cfg.text_key)
  if not pa.types.is_string(column.type) or column.null_count:
    return None
  # Each text then "\n", in C++ (2x faster than interleaving with numpy), chunk by chunk.
  joined = pc.binary_join_element_wise(column, '', '\n')
  blocks = []
  for chunk in joined.chunks:
    offsets = np.frombuffer(chunk.buffers()[1], np.int32, len(chunk) + 1, chunk.offset * 4)
    data = np.frombuffer(chunk.buffers()[2], np.uint8, offsets[-1] - offsets[0], offsets[0])
    blocks.append((data, np.diff(offsets).astype(np.int64)))
  return blocks
