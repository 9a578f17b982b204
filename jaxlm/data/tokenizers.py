"""Tokenizers: characters, UTF-8 bytes, SentencePiece, byte-level BPE, Hugging Face or tiktoken.

A run's tokenizer is built once and kept in the run folder (`tokenizer.json`
names the kind; all but char and byte add their model file as
`tokenizer.model`), so resuming and sampling use the same vocabulary. Char,
SentencePiece and byte-level BPE (GPT-2's pre-tokenizer, with the `tokenizers`
library) are trained on the training documents; a Hugging Face `tokenizer.json`
comes with an import (jaxlm/interop/hf.py) or from `data.tokenizer_file`, as a
tiktoken ranks file (GPT-2's r50k_base.tiktoken) does. Nothing is downloaded.
Subword kinds encode batches in C++ or Rust on every core, or on RAYON_NUM_THREADS.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
import os
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from jaxlm import rundir
from jaxlm.config import ConfigError, DataConfig, TokenizerKind, validate_tokenizer
from jaxlm.data.tokenizer_files import ENDOFTEXT, eos_id_of, parse_ranks, read_setting_file

UNK_CHAR = '\ufffd'  # how ids outside the vocabulary decode
# GPT-2's pre-tokenizer as tiktoken writes it (tiktoken_ext/openai_public.py, r50k_pat_str):
# it splits text as the tokenizers library's ByteLevel(use_regex=True) does.
GPT2_PATTERN = (r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$"""
                r"""|\s+(?!\S)|\s""")


class Tokenizer:
  """Text <-> int ids; subclasses set kind, vocab_size and eos_id."""
  kind: TokenizerKind
  vocab_size: int
  eos_id: int | None = None  # None: documents are joined with '\n' instead

  def encode(self, text: str) -> np.ndarray:
    raise NotImplementedError

  def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
    return [self.encode(t) for t in texts]

  def decode(self, ids) -> str:
    raise NotImplementedError

  def save(self, directory: str) -> None:
    """Writes what load_tokenizer(directory) needs (any epath folder: local, gs://)."""
    rundir.write_tokenizer(directory, self._spec(), self._model_file())

  def _model_file(self) -> bytes | None:
    return None

  def _spec(self) -> dict:
    return {'kind': self.kind.value}

  def digest(self) -> str:
    """sha256 of what save() writes: equal digests, the same tokenizer."""
    h = hashlib.sha256(json.dumps(self._spec(), sort_keys=True).encode())
    h.update(self._model_file() or b'')
    return h.hexdigest()


class CharTokenizer(Tokenizer):
  """One id per character of the training text, plus a last id for unknowns."""
  kind = TokenizerKind.CHAR

  def __init__(self, chars: str):
    self.chars = ''.join(sorted(set(chars)))
    self._codes = np.array([ord(c) for c in self.chars], np.uint32)  # sorted
    self._table = np.array(list(self.chars) + [UNK_CHAR], dtype=object)
    self.unk_id = len(self.chars)
    self.vocab_size = len(self.chars) + 1

  @classmethod
  def train(cls, documents: Iterable[str]) -> CharTokenizer:
    chars = {'\n'}  # the separator between documents, even if no text has one
    for doc in documents:
      chars.update(doc)
    return cls(''.join(chars))

  def encode(self, text: str) -> np.ndarray:
    codes = np.frombuffer(text.encode('utf-32-le', 'surrogatepass'), np.uint32)
    pos = np.minimum(np.searchsorted(self._codes, codes), self.unk_id - 1)
    return np.where(self._codes[pos] == codes, pos, self.unk_id).astype(np.int32)

  def decode(self, ids) -> str:
    ids = np.asarray(ids, np.int64).ravel()
    ids = np.where((ids >= 0) & (ids < self.unk_id), ids, self.unk_id)
    return ''.join(self._table[ids])

  def _spec(self) -> dict:
    return {'kind': self.kind.value, 'chars': self.chars}


class ByteTokenizer(Tokenizer):
  """UTF-8 bytes: 256 ids, nothing learned."""
  kind = TokenizerKind.BYTE
  vocab_size = 256

  def encode(self, text: str) -> np.ndarray:
    return np.frombuffer(text.encode('utf-8', 'surrogatepass'), np.uint8).astype(np.int32)

  def decode(self, ids) -> str:
    ids = np.asarray(ids, np.int64).ravel()
    return ids[(ids >= 0) & (ids < 256)].astype(np.uint8).tobytes().decode('utf-8', 'replace')


class SentencePieceTokenizer(Tokenizer):
  """A SentencePiece model trained on the training documents; has an EOS id."""
  kind = TokenizerKind.SENTENCEPIECE

  def __init__(self, model_proto: bytes):
    import sentencepiece as spm
    self.model_proto = model_proto
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    self.vocab_size = self._sp.get_piece_size()
    self.eos_id = self._sp.eos_id()

  @classmethod
  def train(cls, documents: Iterable[str], vocab_size: int) -> SentencePieceTokenizer:
    import sentencepiece as spm
    # BPE with byte fallback, as in Llama's SentencePiece tokenizer: the same
    # family as GPT-2's BPE, and on tiny_shakespeare it trains 20x faster than
    # unigram (0.3 s vs 5 s) with 4% fewer tokens. Byte fallback and identity
    # normalisation make decode(encode(text)) == text for any text.
    # SentencePiece reads sentences, so documents are cut at newlines (which
    # come back as byte pieces); at most 1M sentences, sampled, are used.
    sentences = (line for doc in documents for line in doc.split('\n') if line)
    model = io.BytesIO()
    spm.set_random_generator_seed(0)  # every process trains the same model
    try:
      spm.SentencePieceTrainer.train(
          sentence_iterator=sentences, model_writer=model, vocab_size=vocab_size,
          model_type='bpe', byte_fallback=True, input_sentence_size=1_000_000,
          shuffle_input_sentence=True, normalization_rule_name='identity',
          remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
          unk_id=0, eos_id=1, bos_id=-1, pad_id=-1,
          num_threads=min(16, os.cpu_count() or 1), minloglevel=2)
    except RuntimeError as e:
      reason = str(e).split('] ', 1)[-1].splitlines()[0]
      raise ConfigError(
          f'SentencePiece cannot train data.vocab_size={vocab_size} pieces on this'
          f' corpus ({reason}); change data.vocab_size as it says') from None
    return cls(model.getvalue())

  def encode(self, text: str) -> np.ndarray:
    return np.asarray(self._sp.encode(text), np.int32)

  def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
    return [np.asarray(ids, np.int32)
            for ids in self._sp.encode(list(texts), num_threads=encode_threads())]

  def decode(self, ids) -> str:
    ids = np.asarray(ids, np.int64).ravel()
    return self._sp.decode(ids[(ids >= 0) & (ids < self.vocab_size)].tolist())

  def _model_file(self) -> bytes | None:
    return self.model_proto

  def _spec(self) -> dict:
    return {'kind': self.kind.value, 'vocab_size': self.vocab_size}


class HuggingFaceTokenizer(Tokenizer):
  """A Hugging Face `tokenizer.json` through the `tokenizers` library (batched, in Rust).

  Text is encoded without special tokens (no BOS): documents are joined with
  the model's EOS id, as the other tokenizers' are.
  """
  kind = TokenizerKind.HUGGINGFACE

  def __init__(self, tokenizer_json: bytes, eos_id: int | None):
    import tokenizers
    self.tokenizer_json = tokenizer_json
    try:
      self._tok = tokenizers.Tokenizer.from_str(tokenizer_json.decode('utf-8'))
    except Exception as e:  # noqa: BLE001  (the library raises plain Exceptions)
      raise ConfigError(f'tokenizer.json is not a Hugging Face tokenizer the tokenizers'
                        f' library reads ({str(e)[:120]}); save it again with'
                        ' save_pretrained') from None
    self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
    self.eos_id = eos_id

  @classmethod
  def from_file(cls, path: str) -> HuggingFaceTokenizer:
    """The user's tokenizer.json (data.tokenizer_file), with the EOS id eos_id_of finds."""
    setting = f'data.tokenizer_file={path}'
    data = read_setting_file(setting, path, 'a Hugging Face tokenizer.json')
    try:
      tokenizer = cls(data, None)
    except ConfigError as e:
      raise ConfigError(f'{setting}: {e}') from None
    tokenizer.eos_id = eos_id_of(tokenizer._tok, path)
    return tokenizer

  def encode(self, text: str) -> np.ndarray:
    return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, np.int32)

  def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
    # The fast path skips character offsets, which nothing here reads: 2x the throughput.
    return [np.asarray(e.ids, np.int32)
            for e in self._tok.encode_batch_fast(list(texts), add_special_tokens=False)]

  def decode(self, ids) -> str:
    ids = np.asarray(ids, np.int64).ravel()
    return self._tok.decode(ids[(ids >= 0) & (ids < self.vocab_size)].tolist(),
                            skip_special_tokens=False)

  def _model_file(self) -> bytes | None:
    return self.tokenizer_json

  def _spec(self) -> dict:
    return {'kind': self.kind.value, 'vocab_size': self.vocab_size, 'eos_id': self.eos_id}


class BPETokenizer(HuggingFaceTokenizer):
  """Byte-level BPE as GPT-2's (its pre-tokenizer and byte alphabet), trained on the corpus.

  Ids are laid out as GPT-2's: the 256 bytes (in GPT-2's order), the merges in
  the order they were learned, then <|endoftext|>, the EOS id. So the vocabulary
  is also a tiktoken ranks file (tiktoken_ranks()) that encodes alike. Text that
  reads '<|endoftext|>' is encoded as text, as tiktoken's encode_ordinary does:
  a document cannot end itself early.
  """
  kind = TokenizerKind.BPE

  def __init__(self, tokenizer_json: bytes):
    super().__init__(tokenizer_json, None)
    self.eos_id = self._tok.token_to_id(ENDOFTEXT)
    if self.eos_id is None:
      raise ConfigError(f'this bpe tokenizer.json has no {ENDOFTEXT} token (its end of'
                        ' document); train one with jaxlm in a new --workdir')
    self._tok.encode_special_tokens = True

  @classmethod
  def train(cls, documents: Iterable[str], vocab_size: int) -> BPETokenizer:
    """vocab_size - 1 byte-level tokens learned from the documents (streamed), then EOS.

    Deterministic: the same documents give the same tokenizer.json, byte for
    byte, in any process and on any number of threads.
    """
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, trainers
    validate_tokenizer(TokenizerKind.BPE, vocab_size, '')  # (at least the bytes and EOS)
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # EOS is added after training rather than as a trainer special token (which
    # would take id 0): the bytes keep ids 0-255 and EOS the last, as in GPT-2.
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    seen = 0

    def texts() -> Iterator[str]:
      nonlocal seen
      for doc in documents:
        if doc:
          seen += 1
          yield doc

    tok.train_from_iterator(texts(), trainer)
    if not seen:
      raise ConfigError('data.tokenizer=bpe found no training text to learn from; give the'
                        ' training split documents (data.train_files or data.dataset)')
    if tok.get_vocab_size() < vocab_size - 1:
      most = tok.get_vocab_size() + 1
      raise ConfigError(f'data.vocab_size={vocab_size}: byte-level BPE finds only {most} tokens'
                        f' in this corpus; lower data.vocab_size to at most {most}')
    tok.add_special_tokens([ENDOFTEXT])
    return cls(tok.to_str().encode('utf-8'))

  def tiktoken_ranks(self) -> bytes:
    """The vocabulary as a tiktoken ranks file: `base64(token bytes) rank` lines, rank = id."""
    byte_of = _byte_of_char()
    vocab = sorted(self._tok.get_vocab(with_added_tokens=False).items(), key=lambda kv: kv[1])
    return b''.join(base64.b64encode(bytes(byte_of[c] for c in token)) + b' %d\n' % rank
                    for token, rank in vocab)

  def _spec(self) -> dict:
    return {'kind': self.kind.value, 'vocab_size': self.vocab_size}


class TiktokenTokenizer(Tokenizer):
  """A tiktoken ranks file: GPT-2's r50k_base.tiktoken, or a BPETokenizer's tiktoken_ranks().

  Read with GPT-2's pre-tokenizer (GPT2_PATTERN): right for r50k_base and
  p50k_base, not for cl100k_base or o200k_base, which split text otherwise.
  <|endoftext|> follows the last rank and is the EOS id (50256 with GPT-2's).
  """
  kind = TokenizerKind.TIKTOKEN

  def __init__(self, ranks_file: bytes, source: str = rundir.TOKENIZER_MODEL_FILE):
    import tiktoken
    ranks = parse_ranks(ranks_file, source)
    self.ranks_file = ranks_file
    self.eos_id = max(ranks.values()) + 1
    self.vocab_size = self.eos_id + 1
    self._known = np.zeros(self.vocab_size, bool)  # ids that decode (ranks may have gaps)
    self._known[list(ranks.values()) + [self.eos_id]] = True
    self._enc = tiktoken.Encoding(name='jaxlm', pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                                  special_tokens={ENDOFTEXT: self.eos_id})

  @classmethod
  def from_file(cls, path: str) -> TiktokenTokenizer:
    """The user's ranks file (data.tokenizer_file), read here: tiktoken never fetches it."""
    setting = f'data.tokenizer_file={path}'
    return cls(read_setting_file(setting, path, 'a tiktoken ranks file'), setting)

  def encode(self, text: str) -> np.ndarray:
    return np.array(self._enc.encode_ordinary(text), np.int32)

  def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
    threads = encode_threads()  # (one thread: without tiktoken's thread pool and its cost)
    batch = (map(self._enc.encode_ordinary, texts) if threads == 1 else
             self._enc.encode_ordinary_batch(list(texts), num_threads=threads))
    return [np.array(ids, np.int32) for ids in batch]

  def decode(self, ids) -> str:
    ids = np.asarray(ids, np.int64).ravel()
    ids = ids[(ids >= 0) & (ids < self.vocab_size)]
    return self._enc.decode(ids[self._known[ids]].tolist(), errors='replace')

  def _model_file(self) -> bytes | None:
    return self.ranks_file

  def _spec(self) -> dict:
    return {'kind': self.kind.value, 'vocab_size': self.vocab_size}


def encode_threads() -> int:
  """Threads that encode a batch: RAYON_NUM_THREADS (the tokenizers library reads it too)."""
  env = os.environ.get('RAYON_NUM_THREADS', '')
  if env.isdigit() and int(env) > 0:
    return int(env)
  return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1


@functools.cache
def _byte_of_char() -> dict[str, int]:
  """GPT-2's byte-level alphabet (tokenizers' ByteLevel): the byte each character stands for.

  Printable Latin-1 bytes stand for themselves; the other 68 are shifted to
  U+0100 onwards, in byte order.
  """
  kept = [*range(0x21, 0x7f), *range(0xa1, 0xad), *range(0xae, 0x100)]
  moved = [b for b in range(256) if b not in kept]
  return {**{chr(b): b for b in kept}, **{chr(0x100 + i): b for i, b in enumerate(moved)}}


def continue_text(tokenizer: Tokenizer, text: str, prompt_ids, new_ids) -> str:
  """The prompt as typed, then the new ids' text as it reads after the prompt's.

  Subword tokenizers decode a piece's leading space only after other pieces, so
  the continuation is decoded together with the prompt and cut after it.
  """
  before = tokenizer.decode(list(prompt_ids))
  after = tokenizer.decode(list(prompt_ids) + list(new_ids))
  return text + (after[len(before):] if after.startswith(before) else tokenizer.decode(new_ids))


def load_tokenizer(workdir: str) -> Tokenizer:
  """The tokenizer saved in a run folder."""
  spec, model = rundir.read_tokenizer(workdir)
  kind = TokenizerKind(spec['kind'])
  if kind is TokenizerKind.CHAR:
    return CharTokenizer(spec['chars'])
  if kind is TokenizerKind.BYTE:
    return ByteTokenizer()
  if kind is TokenizerKind.HUGGINGFACE:
    return HuggingFaceTokenizer(model, spec.get('eos_id'))
  if kind is TokenizerKind.BPE:
    return BPETokenizer(model)
  if kind is TokenizerKind.TIKTOKEN:
    return TiktokenTokenizer(model, os.fspath(rundir.tokenizer_model_file(workdir)))
  return SentencePieceTokenizer(model)


def new_tokenizer(cfg: DataConfig, train_documents: Callable[[], Iterable[str]]) -> Tokenizer:
  """A tokenizer of cfg.tokenizer's kind built from the training documents (nothing saved)."""
  if cfg.tokenizer is TokenizerKind.BYTE:
    return ByteTokenizer()
  if cfg.tokenizer is TokenizerKind.CHAR:
    return CharTokenizer.train(train_documents())
  file = getattr(cfg, 'tokenizer_file', '')  # (classification data has no such setting)
  if cfg.tokenizer is TokenizerKind.HUGGINGFACE and file:
    return HuggingFaceTokenizer.from_file(file)
  if cfg.tokenizer is TokenizerKind.HUGGINGFACE:
    also = ' set data.tokenizer_file=PATH/tokenizer.json,' if hasattr(cfg, 'tokenizer_file') else ''
    raise ConfigError('data.tokenizer=huggingface reads the tokenizer a Hugging Face import'
                      f' put in the run folder, and this one has none;{also} import with'
                      ' python -m jaxlm.hf import (from a folder with tokenizer.json) or pick'
                      ' char, byte, sentencepiece or bpe')
  if cfg.tokenizer is TokenizerKind.TIKTOKEN:
    if not file:
      raise ConfigError('data.tokenizer=tiktoken needs data.tokenizer_file=PATH, a tiktoken'
                        ' ranks file such as GPT-2\'s r50k_base.tiktoken (nothing is downloaded)')
    return TiktokenTokenizer.from_file(file)
  if cfg.tokenizer is TokenizerKind.BPE:
    return BPETokenizer.train(train_documents(), cfg.vocab_size)
  return SentencePieceTokenizer.train(train_documents(), cfg.vocab_size)


def saved_tokenizer(cfg: DataConfig, workdir: str) -> Tokenizer | None:
  """The run folder's tokenizer, checked against cfg; None if it has none."""
  if not rundir.has_tokenizer(workdir):
    return None
  tokenizer = load_tokenizer(workdir)
  if tokenizer.kind is not cfg.tokenizer:
    raise ConfigError(
        f'data.tokenizer={cfg.tokenizer.value} but {workdir} was built with'
        f' {tokenizer.kind.value}; use that tokenizer or a new --workdir')
  trained = (TokenizerKind.SENTENCEPIECE, TokenizerKind.BPE)  # (the others ignore vocab_size)
  if cfg.tokenizer in trained and tokenizer.vocab_size != cfg.vocab_size:
    raise ConfigError(
        f'data.vocab_size={cfg.vocab_size} but the tokenizer in {workdir} has'
        f' {tokenizer.vocab_size}; use that size or a new --workdir')
  return tokenizer


def build_tokenizer(cfg: DataConfig, workdir: str,
                    train_documents: Callable[[], Iterable[str]]) -> Tokenizer:
  """The run folder's tokenizer, or a new one built from the training documents."""
  tokenizer = saved_tokenizer(cfg, workdir)
  if tokenizer is not None:
    return tokenizer
  tokenizer = new_tokenizer(cfg, train_documents)
  import jax  # only for the process index
  if jax.process_index() == 0:
    tokenizer.save(workdir)
  return tokenizer
