"""Tokenizers: characters, bytes, or a SentencePiece model.

A run's tokenizer is built once from the training split and kept in the run
folder (`tokenizer.json` for char/byte, plus `tokenizer.model` for
SentencePiece), so resuming and sampling use the same vocabulary.
"""

from __future__ import annotations

import io
import json
import os
from typing import Callable, Iterable

import numpy as np

from jaxlm.config import ConfigError, DataConfig, TokenizerKind

_SPEC = 'tokenizer.json'
_SP_MODEL = 'tokenizer.model'


class CharTokenizer:
  """One id per character of the training text, plus a last id for unknowns."""
  kind = TokenizerKind.CHAR
  eos_id = None

  def __init__(self, chars: str):
    self.chars = chars
    self._index = {c: i for i, c in enumerate(chars)}
    self.unk_id = len(chars)
    self.vocab_size = len(chars) + 1

  @classmethod
  def train(cls, documents: Iterable[str]) -> 'CharTokenizer':
    chars = set()
    for doc in documents:
      chars.update(doc)
    chars.add('\n')  # the document separator
    return cls(''.join(sorted(chars)))

  def encode(self, text: str) -> np.ndarray:
    unk = self.unk_id
    return np.fromiter((self._index.get(c, unk) for c in text), np.int32, len(text))

  def decode(self, ids) -> str:
    return ''.join(self.chars[i] if i < self.unk_id else '\ufffd' for i in map(int, ids))

  def spec(self) -> dict:
    return {'kind': self.kind.value, 'chars': self.chars}


class ByteTokenizer:
  """UTF-8 bytes: 256 ids, nothing learned."""
  kind = TokenizerKind.BYTE
  eos_id = None
  vocab_size = 256

  def encode(self, text: str) -> np.ndarray:
    return np.frombuffer(text.encode('utf-8'), np.uint8).astype(np.int32)

  def decode(self, ids) -> str:
    return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode('utf-8', errors='replace')

  def spec(self) -> dict:
    return {'kind': self.kind.value}


class SentencePieceTokenizer:
  """A SentencePiece model trained on the training split."""
  kind = TokenizerKind.SENTENCEPIECE

  def __init__(self, model_proto: bytes):
    import sentencepiece as spm
    self.model_proto = model_proto
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    self.vocab_size = self._sp.get_piece_size()
    self.eos_id = self._sp.eos_id()

  @classmethod
  def train(cls, documents: Iterable[str], vocab_size: int) -> 'SentencePieceTokenizer':
    import sentencepiece as spm
    model = io.BytesIO()
    # Unigram (SentencePiece's default) with byte fallback: no unknown tokens.
    # Sample at most 1M sentences so lm1b-sized corpora train in minutes.
    try:
      spm.SentencePieceTrainer.train(
          sentence_iterator=(line for doc in documents for line in doc.split('\n') if line),
          model_writer=model, vocab_size=vocab_size, model_type='unigram',
          byte_fallback=True, input_sentence_size=1_000_000,
          shuffle_input_sentence=True, character_coverage=0.9995,
          pad_id=-1, bos_id=-1, eos_id=1, unk_id=0, minloglevel=2)
    except RuntimeError as e:
      reason = str(e).splitlines()[-1]
      raise ConfigError(f'data.vocab_size={vocab_size} cannot train SentencePiece'
                        f' ({reason}); change data.vocab_size') from None
    return cls(model.getvalue())

  def encode(self, text: str) -> np.ndarray:
    return np.asarray(self._sp.encode(text), np.int32)

  def decode(self, ids) -> str:
    return self._sp.decode([int(i) for i in ids])

  def spec(self) -> dict:
    return {'kind': self.kind.value, 'vocab_size': self.vocab_size}


Tokenizer = CharTokenizer | ByteTokenizer | SentencePieceTokenizer


def save(tokenizer: Tokenizer, workdir: str) -> None:
  os.makedirs(workdir, exist_ok=True)
  if isinstance(tokenizer, SentencePieceTokenizer):
    with open(os.path.join(workdir, _SP_MODEL), 'wb') as f:
      f.write(tokenizer.model_proto)
  with open(os.path.join(workdir, _SPEC), 'w') as f:
    json.dump(tokenizer.spec(), f)


def load_tokenizer(workdir: str) -> Tokenizer:
  """The tokenizer stored in a run folder."""
  path = os.path.join(workdir, _SPEC)
  if not os.path.exists(path):
    raise ConfigError(f'{workdir} has no {_SPEC}; pass the --workdir of a jaxlm run')
  with open(path) as f:
    spec = json.load(f)
  kind = TokenizerKind(spec['kind'])
  if kind is TokenizerKind.CHAR:
    return CharTokenizer(spec['chars'])
  if kind is TokenizerKind.BYTE:
    return ByteTokenizer()
  with open(os.path.join(workdir, _SP_MODEL), 'rb') as f:
    return SentencePieceTokenizer(f.read())


def build_tokenizer(cfg: DataConfig, workdir: str,
                    train_documents: Callable[[], Iterable[str]]) -> Tokenizer:
  """Loads the run folder's tokenizer, or builds it from the training split."""
  if os.path.exists(os.path.join(workdir, _SPEC)):
    tokenizer = load_tokenizer(workdir)
    if tokenizer.kind is not cfg.tokenizer:
      raise ConfigError(
          f'data.tokenizer={cfg.tokenizer.value!r} but {workdir} was built with'
          f' {tokenizer.kind.value!r}; use a new --workdir or that tokenizer')
    return tokenizer
  if cfg.tokenizer is TokenizerKind.BYTE:
    tokenizer = ByteTokenizer()
  elif cfg.tokenizer is TokenizerKind.CHAR:
    tokenizer = CharTokenizer.train(train_documents())
  else:
    tokenizer = SentencePieceTokenizer.train(train_documents(), cfg.vocab_size)
  import jax
  if jax.process_index() == 0:
    save(tokenizer, workdir)
  return tokenizer
