"""Tokenizers: char, byte, SentencePiece; caching in the run folder."""

import pytest

from jaxlm import tokenizers
from jaxlm.config import ConfigError, TokenizerKind
from tests.configs import tiny_config


def _data(**overrides):
  return tiny_config(**{f'data__{k}': v for k, v in overrides.items()}).data


def test_char_vocabulary_round_trip_and_unknowns():
  tok = tokenizers.CharTokenizer.train(['hello world', 'abc'])
  assert tok.vocab_size == len(set('hello worldabc\n')) + 1
  ids = tok.encode('hello')
  assert tok.decode(ids) == 'hello'
  assert list(tok.encode('hé')) == [tok.encode('h')[0], tok.unk_id]
  assert tok.decode(tok.encode('hé')) == 'h\ufffd'


def test_byte_round_trip_non_ascii():
  tok = tokenizers.ByteTokenizer()
  text = 'Ça va? 東京 🙂'
  assert tok.vocab_size == 256
  assert tok.decode(tok.encode(text)) == text


def test_sentencepiece_trains_caches_and_reloads(tmp_path, shakespeare_dir):
  text = open(f'{shakespeare_dir}/input.txt').read()[:200_000]
  cfg = _data(tokenizer='sentencepiece', vocab_size=500)
  calls = []

  def docs():
    calls.append(1)
    return [text]

  tok = tokenizers.build_tokenizer(cfg, str(tmp_path), docs)
  assert tok.vocab_size == 500 and tok.eos_id is not None
  sample = 'ROMEO: But soft, what light through yonder window breaks?'
  assert tok.decode(tok.encode(sample)) == sample
  again = tokenizers.build_tokenizer(cfg, str(tmp_path), docs)
  assert len(calls) == 1  # the second build loaded the cached model
  assert list(again.encode(sample)) == list(tok.encode(sample))
  assert tokenizers.load_tokenizer(str(tmp_path)).kind is TokenizerKind.SENTENCEPIECE


def test_char_tokenizer_is_cached(tmp_path):
  cfg = _data(tokenizer='char')
  tok = tokenizers.build_tokenizer(cfg, str(tmp_path), lambda: ['abc'])
  again = tokenizers.build_tokenizer(cfg, str(tmp_path), lambda: ['xyz'])
  assert again.chars == tok.chars == '\nabc'


def test_kind_mismatch_with_the_run_folder(tmp_path):
  tokenizers.build_tokenizer(_data(tokenizer='byte'), str(tmp_path), lambda: [])
  with pytest.raises(ConfigError, match=r"data\.tokenizer='char' but .* 'byte'"):
    tokenizers.build_tokenizer(_data(tokenizer='char'), str(tmp_path), lambda: ['a'])


def test_missing_tokenizer_in_run_folder(tmp_path):
  with pytest.raises(ConfigError, match='has no tokenizer.json'):
    tokenizers.load_tokenizer(str(tmp_path))


def test_sentencepiece_vocabulary_too_small():
  cfg = _data(tokenizer='sentencepiece', vocab_size=50)
  with pytest.raises(ConfigError, match=r'data\.vocab_size=50 cannot train SentencePiece'):
    tokenizers.build_tokenizer(cfg, '/nonexistent-run', lambda: ['some text here'] * 10)
