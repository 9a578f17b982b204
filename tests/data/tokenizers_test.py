"""Tokenizers: vocabularies, round trips, caching in the run folder."""

import os

import numpy as np
import pytest

from jaxlm import rundir
from jaxlm.data import tokenizers
from jaxlm.config import ConfigError, TokenizerKind
from jaxlm.data.sources import documents
from tests.testdata import data_config, tiny_shakespeare_text

SP_VOCAB = 500


def _never():
  raise AssertionError('the cached tokenizer should have been used')


def _build(cfg, workdir):
  return tokenizers.build_tokenizer(cfg, str(workdir), lambda: documents(cfg, cfg.train_split))


@pytest.fixture(scope='module')
def sp_workdir(tmp_path_factory):
  """A run folder with a small SentencePiece model trained on tiny_shakespeare."""
  workdir = tmp_path_factory.mktemp('sp')
  cfg = data_config(tokenizer=TokenizerKind.SENTENCEPIECE, vocab_size=SP_VOCAB)
  _build(cfg, workdir)
  return workdir


def test_char_vocabulary_is_the_training_characters_plus_unknown(tmp_path):
  tok = _build(data_config(), tmp_path)
  assert len(tok.chars) == 65  # as nanoGPT's shakespeare_char
  assert tok.chars == ''.join(sorted(set(tiny_shakespeare_text())))
  assert tok.vocab_size == 66 and tok.unk_id == 65 and tok.eos_id is None
  assert os.path.exists(tmp_path / rundir.TOKENIZER_FILE)


def test_char_round_trip_and_unknown():
  tok = tokenizers.CharTokenizer.train(['hello world'])
  ids = tok.encode('hello\nworld')
  assert ids.dtype == np.int32 and tok.decode(ids) == 'hello\nworld'
  assert tok.decode(tok.encode(' ')) == ' '
  ids = tok.encode('hé!')
  np.testing.assert_array_equal(ids[1:], [tok.unk_id, tok.unk_id])
  assert tok.decode(ids) == 'h\ufffd\ufffd'
  assert tok.decode([tok.vocab_size + 3, -1]) == '\ufffd\ufffd'  # padded model vocab


def test_char_round_trip_on_tiny_shakespeare(tmp_path):
  tok = _build(data_config(), tmp_path)
  text = tiny_shakespeare_text()[:20000]
  assert tok.decode(tok.encode(text)) == text
  assert tok.unk_id not in tok.encode(text)


def test_cached_tokenizer_is_loaded_without_reading_data(tmp_path):
  first = _build(data_config(), tmp_path)
  again = tokenizers.build_tokenizer(data_config(), str(tmp_path), _never)
  loaded = tokenizers.load_tokenizer(str(tmp_path))
  assert again.chars == first.chars == loaded.chars


def test_byte_round_trip_on_non_ascii(tmp_path):
  cfg = data_config(tokenizer=TokenizerKind.BYTE)
  tok = tokenizers.build_tokenizer(cfg, str(tmp_path), _never)
  text = 'naïve café — 漢字 🙂\n'
  ids = tok.encode(text)
  assert tok.vocab_size == 256 and tok.eos_id is None
  assert len(ids) == len(text.encode('utf-8')) and ids.max() < 256
  assert tok.decode(ids) == text
  assert tok.decode(list(ids) + [300]) == text  # ids past 256 are dropped
  assert isinstance(tokenizers.load_tokenizer(str(tmp_path)), tokenizers.ByteTokenizer)


def test_sentencepiece_trains_caches_and_round_trips(sp_workdir):
  assert os.path.exists(sp_workdir / rundir.TOKENIZER_MODEL_FILE)
  cfg = data_config(tokenizer=TokenizerKind.SENTENCEPIECE, vocab_size=SP_VOCAB)
  tok = tokenizers.build_tokenizer(cfg, str(sp_workdir), _never)
  assert tok.vocab_size == SP_VOCAB and tok.eos_id is not None
  text = tiny_shakespeare_text()[:5000] + '  odd  spacing\tand 漢字\n'
  ids = tok.encode(text)
  assert tok.decode(ids) == text
  assert len(ids) < 0.6 * len(text)  # it learned pieces longer than characters
  assert ids.max() < SP_VOCAB and tok.eos_id not in ids
  loaded = tokenizers.load_tokenizer(str(sp_workdir))
  assert loaded.model_proto == tok.model_proto
  np.testing.assert_array_equal(loaded.encode(text), ids)
  np.testing.assert_array_equal(
      np.concatenate(tok.encode_batch([text, 'ROMEO:'])),
      np.concatenate([ids, tok.encode('ROMEO:')]))


def test_kind_mismatch_names_the_setting(tmp_path):
  _build(data_config(), tmp_path)
  with pytest.raises(ConfigError, match=r'data\.tokenizer=byte .* char'):
    tokenizers.build_tokenizer(data_config(tokenizer=TokenizerKind.BYTE), str(tmp_path), _never)


def test_sentencepiece_size_mismatch_names_the_setting(sp_workdir):
  cfg = data_config(tokenizer=TokenizerKind.SENTENCEPIECE, vocab_size=SP_VOCAB + 1)
  with pytest.raises(ConfigError, match=r'data\.vocab_size=501'):
    tokenizers.build_tokenizer(cfg, str(sp_workdir), _never)


@pytest.mark.parametrize('vocab_size', [50, 100_000])
def test_sentencepiece_vocab_size_that_cannot_work(tmp_path, vocab_size):
  cfg = data_config(tokenizer=TokenizerKind.SENTENCEPIECE, vocab_size=vocab_size)
  docs = lambda: ['a small corpus, with a few words.'] * 100  # noqa: E731
  with pytest.raises(ConfigError, match=fr'data\.vocab_size={vocab_size}') as e:
    tokenizers.build_tokenizer(cfg, str(tmp_path), docs)
  assert '\n' not in str(e.value)


def test_load_from_a_folder_without_tokenizer(tmp_path):
  with pytest.raises(ConfigError, match=r'workdir=.* holds no tokenizer\.json'):
    tokenizers.load_tokenizer(str(tmp_path))


def _hf_bpe(tmp_path):
  """A small byte-level BPE trained with the tokenizers library, as tokenizer.json bytes."""
  import tokenizers
  tok = tokenizers.Tokenizer(tokenizers.models.BPE())
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = tokenizers.decoders.ByteLevel()
  trainer = tokenizers.trainers.BpeTrainer(
      vocab_size=300, initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(['to be or not to be, that is the question'] * 50, trainer)
  return tok.to_str().encode()


def test_a_hugging_face_tokenizer_round_trips_through_the_run_folder(tmp_path):
  from jaxlm.data.tokenizers import HuggingFaceTokenizer, continue_text, load_tokenizer
  tok = HuggingFaceTokenizer(_hf_bpe(tmp_path), eos_id=7)
  text = 'to be, or not to be: café'
  ids = tok.encode(text)
  assert tok.decode(ids) == text  # byte-level: any text
  assert [x.tolist() for x in tok.encode_batch([text, 'be'])] == [ids.tolist(),
                                                                  tok.encode('be').tolist()]
  tok.save(str(tmp_path))
  again = load_tokenizer(str(tmp_path))
  assert (again.kind, again.vocab_size, again.eos_id) == (tok.kind, tok.vocab_size, 7)
  assert again.encode(text).tolist() == ids.tolist()
  # A continuation reads as it does after the prompt (its leading space kept).
  prompt, more = tok.encode('to be'), tok.encode(' or not').tolist()
  assert continue_text(tok, 'to be', prompt, more) == 'to be or not'


def test_huggingface_is_never_trained_here(tmp_path):
  from jaxlm.config import ConfigError
  from jaxlm.data.tokenizers import new_tokenizer
  from tests.configs import tiny_config
  cfg = tiny_config(data__tokenizer='huggingface').data
  with pytest.raises(ConfigError, match=r'data\.tokenizer=huggingface reads the tokenizer a'
                                        r' Hugging Face import put in the run folder'):
    new_tokenizer(cfg, lambda: ['text'])
