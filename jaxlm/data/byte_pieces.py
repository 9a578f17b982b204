"""Byte-tokenized pieces of `lines` and `jsonl` files in a few vectorized passes.

With the byte tokenizer a document's tokens are its UTF-8 bytes, then the
separator "\\n". Going line by line in Python (read, decode, parse, encode,
concatenate) runs at about 10-20 MB/s a core; the byte tokenizer itself
encodes at over 100. `tokens(cfg, piece)` reads a piece's lines as one block
and gives the same tokens without a loop per document:

  lines: the block itself, when no line is empty and none ends in "\\r"
         (else the line-by-line path, which drops and strips them);
  jsonl: the text column that pyarrow's JSON reader (C++) parses, when every
         line is an object whose text field is a string and no string escapes a
         surrogate (else the line-by-line path, which also names a bad line).

None means "take the line-by-line path": its tokens are the same, only slower,
and its errors are the one-line ones. tests/data/prepare_test.py checks both
paths give the same bytes.
"""

from __future__ import annotations

import io
import re

import numpy as np

from jaxlm.config import DataConfig, FileFormat
from jaxlm.data import pieces as pieces_lib

NEWLINE = 10
_SURROGATE = re.compile(rb'\\u[dD]')  # escapes of U+D000-DFFF, surrogates among them (3x `in`)
BLOCK_BYTES = 4 << 20  # pyarrow's JSON reader parses 16 MB 1.3x faster than in 1 MB blocks


def tokens(cfg: DataConfig, piece: pieces_lib.Piece) -> tuple[np.ndarray, np.ndarray] | None:
  """(uint8 tokens with a "\\n" after each document, each document's length with it), or None."""
  if cfg.file_format not in (FileFormat.LINES, FileFormat.JSONL):
    return None
  raw = pieces_lib.line_block(piece)
  try:
    raw.decode('utf-8')
  except UnicodeDecodeError:
    return None  # the slow path names the first bad line or byte
  if not raw:
    return np.zeros(0, np.uint8), np.zeros(0, np.int64)
  if not raw.endswith(b'\n'):
    raw += b'\n'
  # (numpy, not `b'\n\n' in raw`: 7 ms for 16 MB instead of 32)
  buf = np.frombuffer(raw, np.uint8)
  ends = np.flatnonzero(buf == NEWLINE) + 1  # each line's end, after its "\n"
  lengths = np.diff(ends, prepend=0)
  if (lengths == 1).any() or (buf[ends[lengths > 1] - 2] == 13).any():
    return None  # an empty line, or one ending in "\r": the slow path drops / strips them
  if cfg.file_format is FileFormat.LINES:
    return buf, lengths
  return _jsonl(cfg, raw, len(lengths))


def _jsonl(cfg: DataConfig, raw: bytes, lines: int):
  try:
    import pyarrow as pa
    import pyarrow.json as pa_json
  except ImportError:
    return None
  if _SURROGATE.search(raw):  # json.loads keeps lone surrogates, pyarrow not
    return None
  try:
    table = pa_json.read_json(io.BytesIO(raw), read_options=pa_json.ReadOptions(
        use_threads=False, block_size=BLOCK_BYTES))
  except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
    return None
  if table.num_rows != lines or cfg.text_key not in table.column_names:
    return None
  column = table.column(cfg.text_key)
  if not pa.types.is_string(column.type) or column.null_count:
    return None
  texts = column.combine_chunks()
  offsets = np.frombuffer(texts.buffers()[1], np.int32, len(texts) + 1, texts.offset * 4)
  data = np.frombuffer(texts.buffers()[2], np.uint8, offsets[-1] - offsets[0], offsets[0])
  lengths = np.diff(offsets).astype(np.int64) + 1  # with the "\n" after each document
  ends = np.cumsum(lengths) - 1
  out = np.full(int(lengths.sum()), NEWLINE, np.uint8)
  text = np.ones(len(out), bool)
  text[ends] = False
  out[text] = data  # (np.insert is 1.7x slower)
  return out, lengths
