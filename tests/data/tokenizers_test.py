"""Tokenizers: vocabularies, round trips, caching in the run folder."""

import json
import os

import numpy as np
import pytest

from jaxlm import rundir
from jaxlm.data import tokenizers
from jaxlm.config import ConfigError, TokenizerKind
from jaxlm.data.sources import documents
from tests import testdata
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


# --- Byte-level BPE, a user's tokenizer.json, tiktoken -------------------------

BPE_VOCAB = 1024
# Text no training corpus covers: accents, CJK, emoji, runs of spaces, tabs and
# newlines, control bytes, trailing space, and the EOS token's own spelling.
ODD_TEXTS = ['naïve café — 漢字 🙂👍🏽\n', '   three spaces\t\ttabs\n\n\nend   ',
             "it's we'll I'M 12345 6.78", 'a <|endoftext|> b', '\x00\x01\x7f \u200b\ufeff', ' ',
             '']


def _documents():
  """tiny_shakespeare cut into ~1 KB documents."""
  text = tiny_shakespeare_text()
  return [text[i:i + 1000] for i in range(0, len(text), 1000)]


@pytest.fixture(scope='module')
def bpe():
  return tokenizers.BPETokenizer.train(iter(_documents()), BPE_VOCAB)


def test_bpe_round_trips_any_text(bpe):
  assert bpe.kind is TokenizerKind.BPE and bpe.vocab_size == BPE_VOCAB
  assert bpe.eos_id == BPE_VOCAB - 1  # last, as GPT-2's 50256
  text = tiny_shakespeare_text()[:20000]
  ids = bpe.encode(text)
  assert ids.dtype == np.int32 and bpe.decode(ids) == text
  assert len(ids) < 0.5 * len(text)  # merges learned (0.42 chars a token here)
  for odd in ODD_TEXTS:
    assert bpe.decode(bpe.encode(odd)) == odd, odd
  # '<|endoftext|>' inside a document is text, never the EOS id (as tiktoken's encode_ordinary)
  assert bpe.eos_id not in bpe.encode('a <|endoftext|> b')
  batch = bpe.encode_batch(ODD_TEXTS)
  assert [b.tolist() for b in batch] == [bpe.encode(t).tolist() for t in ODD_TEXTS]
  assert bpe.decode(list(bpe.encode('ROMEO:')) + [BPE_VOCAB + 5, -1]) == 'ROMEO:'  # padding ids


def test_bpe_ids_are_laid_out_as_gpt2s(bpe):
  """Ids 0-255 are the bytes in GPT-2's order (tiktoken's data_gym order), merges follow."""
  import tokenizers as hf
  assert set(tokenizers._byte_of_char()) == set(hf.pre_tokenizers.ByteLevel.alphabet())
  printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != ' ']
  gpt2_order = printable + [b for b in range(256) if b not in printable]
  lines = bpe.tiktoken_ranks().splitlines()
  assert len(lines) == BPE_VOCAB - 1
  import base64
  assert [base64.b64decode(line.split()[0]) for line in lines[:256]] == [
      bytes([b]) for b in gpt2_order]
  assert [int(line.split()[1]) for line in lines] == list(range(BPE_VOCAB - 1))


def test_bpe_is_saved_and_resumed_from_the_run_folder(bpe, tmp_path):
  bpe.save(str(tmp_path))
  assert json.loads((tmp_path / rundir.TOKENIZER_FILE).read_text()) == {
      'kind': 'bpe', 'vocab_size': BPE_VOCAB}
  assert (tmp_path / rundir.TOKENIZER_MODEL_FILE).read_bytes() == bpe.tokenizer_json
  loaded = tokenizers.load_tokenizer(str(tmp_path))
  assert isinstance(loaded, tokenizers.BPETokenizer) and loaded.eos_id == bpe.eos_id
  for odd in ODD_TEXTS:
    assert loaded.encode(odd).tolist() == bpe.encode(odd).tolist()
  cfg = data_config(tokenizer=TokenizerKind.BPE, vocab_size=BPE_VOCAB)
  assert tokenizers.build_tokenizer(cfg, str(tmp_path), _never).tokenizer_json == (
      bpe.tokenizer_json)
  with pytest.raises(ConfigError, match=r'data\.vocab_size=2048 but the tokenizer in .* has'
                                        r' 1024; use that size or a new --workdir'):
    tokenizers.build_tokenizer(data_config(tokenizer=TokenizerKind.BPE, vocab_size=2048),
                               str(tmp_path), _never)
  with pytest.raises(ConfigError, match=r'data\.tokenizer=sentencepiece .* built with bpe'):
    tokenizers.build_tokenizer(data_config(tokenizer=TokenizerKind.SENTENCEPIECE,
                                           vocab_size=BPE_VOCAB), str(tmp_path), _never)


def test_bpe_training_is_deterministic_across_processes(bpe, tmp_path):
  """Every process of a multi-host run trains the same tokenizer.json, byte for byte."""
  import subprocess
  import sys
  script = ('import sys; from jaxlm.data import tokenizers; from tests.data.tokenizers_test'
            ' import _documents; sys.stdout.buffer.write(tokenizers.BPETokenizer.train('
            f'iter(_documents()), {BPE_VOCAB}).tokenizer_json)')
  env = dict(os.environ, PYTHONHASHSEED='123', RAYON_NUM_THREADS='1',
             PYTHONPATH=str(testdata.REPO))
  out = subprocess.run([sys.executable, '-c', script], capture_output=True, env=env,
                       cwd=testdata.REPO, timeout=120, check=True)
  assert out.stdout == bpe.tokenizer_json
  again = tokenizers.BPETokenizer.train(iter(_documents()), BPE_VOCAB)
  assert again.tokenizer_json == bpe.tokenizer_json


def test_bpe_through_build_tokenizer_trains_on_the_split(tmp_path):
  cfg = data_config(tokenizer=TokenizerKind.BPE, vocab_size=300)
  tok = _build(cfg, tmp_path)
  assert isinstance(tok, tokenizers.BPETokenizer) and tok.vocab_size == 300
  assert tokenizers.load_tokenizer(str(tmp_path)).tokenizer_json == tok.tokenizer_json


@pytest.mark.parametrize('documents, vocab_size, message', [
    (['to be or not'] * 10, 100, r'data\.tokenizer=bpe needs data\.vocab_size >= 257'
                                 r' \(the 256 bytes and <\|endoftext\|>\), not 100'),
    ([], 1000, r'data\.tokenizer=bpe found no training text'),
    (['', ''], 1000, r'data\.tokenizer=bpe found no training text'),
    (['ab ab'] * 10, 1000, r'data\.vocab_size=1000: byte-level BPE finds only 259 tokens in this'
                           r' corpus; lower data\.vocab_size to at most 259'),
])
def test_bpe_that_cannot_train_is_one_line(documents, vocab_size, message):
  with pytest.raises(ConfigError, match=message) as e:
    tokenizers.BPETokenizer.train(iter(documents), vocab_size)
  assert '\n' not in str(e.value)


def test_bpe_training_passes_on_a_document_error():
  def documents():
    yield 'some text'
    raise ConfigError('corpus.txt: not UTF-8')
  with pytest.raises(ConfigError, match='corpus.txt: not UTF-8'):
    tokenizers.BPETokenizer.train(documents(), 300)


@pytest.fixture(scope='module')
def ranks_file(bpe, tmp_path_factory):
  """The trained BPE's vocabulary as a tiktoken ranks file, as GPT-2's r50k_base.tiktoken."""
  path = tmp_path_factory.mktemp('ranks') / 'shakespeare.tiktoken'
  path.write_bytes(bpe.tiktoken_ranks())
  return path


def _tiktoken_cfg(path, **overrides):
  return data_config(tokenizer=TokenizerKind.TIKTOKEN, tokenizer_file=str(path), **overrides)


def test_tiktoken_encodes_as_the_bpe_it_was_converted_from(bpe, ranks_file, monkeypatch):
  import tiktoken.load
  monkeypatch.setattr(tiktoken.load, 'read_file', _no_download)
  monkeypatch.setattr(tiktoken.load, 'read_file_cached', _no_download)
  tok = tokenizers.new_tokenizer(_tiktoken_cfg(ranks_file), _never)
  assert isinstance(tok, tokenizers.TiktokenTokenizer)
  assert (tok.vocab_size, tok.eos_id) == (BPE_VOCAB, bpe.eos_id)
  docs = _documents() + ODD_TEXTS
  ours = tok.encode_batch(docs)
  theirs = bpe.encode_batch(docs)
  assert all(a.tolist() == b.tolist() for a, b in zip(ours, theirs, strict=True))
  for doc, ids in zip(docs, ours):
    assert ids.dtype == np.int32 and tok.decode(ids) == doc
  assert tok.encode(docs[3]).tolist() == ours[3].tolist()
  assert tok.decode([5, BPE_VOCAB + 3, -1, tok.eos_id]) == bpe.decode([5, tok.eos_id])


def test_batches_encode_alike_on_one_thread_or_more(bpe, ranks_file, monkeypatch):
  tok = tokenizers.TiktokenTokenizer.from_file(str(ranks_file))
  docs = _documents()[:200]
  many = [ids.tolist() for ids in tok.encode_batch(docs)]
  monkeypatch.setenv('RAYON_NUM_THREADS', '1')
  assert tokenizers.encode_threads() == 1
  assert [ids.tolist() for ids in tok.encode_batch(docs)] == many
  monkeypatch.setenv('RAYON_NUM_THREADS', '3')
  assert tokenizers.encode_threads() == 3
  assert [ids.tolist() for ids in tok.encode_batch(docs)] == many
  monkeypatch.setenv('RAYON_NUM_THREADS', 'lots')  # not a count: every core
  assert tokenizers.encode_threads() >= 1


def _no_download(*args, **kwargs):
  raise AssertionError('tiktoken was asked to fetch a file')


def test_gpt2_pattern_is_tiktokens_r50k():
  from tiktoken_ext.openai_public import r50k_pat_str  # (a constant: nothing is downloaded)
  assert tokenizers.GPT2_PATTERN == r50k_pat_str


def test_tiktoken_is_saved_and_resumed_from_the_run_folder(ranks_file, tmp_path):
  cfg = _tiktoken_cfg(ranks_file)
  tok = _build(cfg, tmp_path)
  assert (tmp_path / rundir.TOKENIZER_MODEL_FILE).read_bytes() == ranks_file.read_bytes()
  loaded = tokenizers.load_tokenizer(str(tmp_path))
  assert isinstance(loaded, tokenizers.TiktokenTokenizer)
  assert (loaded.vocab_size, loaded.eos_id) == (tok.vocab_size, tok.eos_id)
  text = tiny_shakespeare_text()[:3000]
  assert loaded.encode(text).tolist() == tok.encode(text).tolist()
  # vocab_size is not tiktoken's to check; the saved ranks are kept even if the file goes
  ranks_copy = tmp_path / 'gone.tiktoken'
  resumed = tokenizers.build_tokenizer(_tiktoken_cfg(ranks_copy, vocab_size=7),
                                       str(tmp_path), _never)
  assert resumed.ranks_file == tok.ranks_file


def _ranks_lines(ranks_file, n):
  return b''.join(ranks_file.read_bytes().splitlines(keepends=True)[:n])


@pytest.mark.parametrize('content, message', [
    (None, r'data\.tokenizer_file=\S+nope\.tiktoken: no such file; pass the path of a tiktoken'
           r' ranks file'),
    (b'', r'data\.tokenizer_file=\S+ is empty; pass a tiktoken ranks file'),
    (b'IQ== 0\nnot-base64! 1\n', r'data\.tokenizer_file=\S+: line 2 is not `base64token rank`'),
    (b'IQ== zero\n', r'line 1 is not `base64token rank`'),
    (b'IQ== 0\nIg== 1\n', r'lacks 254 of the 256 single bytes'),
])
def test_a_bad_ranks_file_is_one_line(tmp_path, content, message):
  path = tmp_path / 'nope.tiktoken'
  if content is not None:
    path.write_bytes(content)
  with pytest.raises(ConfigError, match=message) as e:
    tokenizers.new_tokenizer(_tiktoken_cfg(path), _never)
  assert '\n' not in str(e.value)


def test_ranks_that_repeat_or_skip_far_are_one_line(ranks_file, tmp_path):
  path = tmp_path / 'r.tiktoken'
  path.write_bytes(_ranks_lines(ranks_file, 256) + b'IGE= 5\n')  # ' a' given rank 5 again
  with pytest.raises(ConfigError, match=r'ranks must be distinct and run from 0'):
    tokenizers.new_tokenizer(_tiktoken_cfg(path), _never)
  path.write_bytes(_ranks_lines(ranks_file, 256) + b'IGE= 100000\n')
  with pytest.raises(ConfigError, match=r'not 0\.\.100000'):
    tokenizers.new_tokenizer(_tiktoken_cfg(path), _never)


def test_tiktoken_needs_a_ranks_file():
  cfg = data_config(tokenizer=TokenizerKind.TIKTOKEN)
  with pytest.raises(ConfigError, match=r'data\.tokenizer=tiktoken needs data\.tokenizer_file'):
    tokenizers.new_tokenizer(cfg, _never)


def _user_tokenizer_json(folder, special=('<|endoftext|>',)):
  """A user's tokenizer.json (a small byte-level BPE) in folder, with these special tokens."""
  import tokenizers as hf
  tok = hf.Tokenizer(hf.models.BPE())
  tok.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = hf.decoders.ByteLevel()
  trainer = hf.trainers.BpeTrainer(vocab_size=300, special_tokens=list(special),
                                   initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(['to be or not to be, that is the question'] * 50, trainer)
  folder.mkdir(exist_ok=True)
  tok.save(str(folder / 'tokenizer.json'))
  return folder / 'tokenizer.json'


def _hf_cfg(path):
  return data_config(tokenizer=TokenizerKind.HUGGINGFACE, tokenizer_file=str(path))


def test_a_users_tokenizer_json_is_read_and_kept_in_the_run_folder(tmp_path):
  path = _user_tokenizer_json(tmp_path / 'user', special=('<unk>', '</s>'))
  tok = _build(_hf_cfg(path), tmp_path / 'run')
  assert tok.kind is TokenizerKind.HUGGINGFACE and tok.eos_id == 1  # '</s>'
  assert tok.decode(tok.encode(ODD_TEXTS[0])) == ODD_TEXTS[0]
  loaded = tokenizers.load_tokenizer(str(tmp_path / 'run'))
  assert (loaded.eos_id, loaded.tokenizer_json) == (1, path.read_bytes())
  resumed = tokenizers.build_tokenizer(_hf_cfg(path), str(tmp_path / 'run'), _never)
  assert resumed.tokenizer_json == path.read_bytes()


@pytest.mark.parametrize('special, beside, eos', [
    (('<|endoftext|>',), {}, 0),
    (('<unk>', '<s>', '<|end_of_text|>'), {}, 2),
    (('<unk>', '<eos>', '</s>'), {}, 2),  # </s> before <eos>
    (('<unk>', '<|im_end|>'), {}, 1),
    (('<unk>', '</s>'), {'generation_config.json': {'eos_token_id': [0, 1]}}, 0),
    (('<unk>', '</s>'), {'config.json': {'eos_token_id': 0}}, 0),
    (('<unk>', '</s>', '<end>'), {'tokenizer_config.json': {'eos_token': '<end>'}}, 2),
    (('<unk>', '</s>', '<end>'), {'tokenizer_config.json': {'eos_token': {'content': '<end>'}}},
     2),
    (('<unk>', '</s>'), {'generation_config.json': {'eos_token_id': 99999}}, 1),  # out of range
    (('<unk>', '</s>'), {'generation_config.json': '{"eos_token_id": '}, 1),  # not JSON
])
def test_a_users_tokenizer_json_gives_its_eos_id(tmp_path, special, beside, eos):
  path = _user_tokenizer_json(tmp_path, special)
  for name, value in beside.items():
    (tmp_path / name).write_text(value if isinstance(value, str) else json.dumps(value))
  assert tokenizers.HuggingFaceTokenizer.from_file(str(path)).eos_id == eos


def test_a_users_tokenizer_json_without_an_eos_is_one_line(tmp_path):
  path = _user_tokenizer_json(tmp_path, special=('<unk>',))
  with pytest.raises(ConfigError, match=r'data\.tokenizer_file=\S+ has none of the'
                                        r' end-of-document tokens <\|endoftext\|> .* write'
                                        r' \{"eos_token_id": ID\} to \S+generation_config\.json'):
    tokenizers.new_tokenizer(_hf_cfg(path), _never)


def test_a_bad_users_tokenizer_json_is_one_line(tmp_path):
  (tmp_path / 'broken.json').write_text('{"version": "1.0", "model": ')
  (tmp_path / 'latin1.json').write_bytes(b'\xe9\xe9')
  for path, message in [
      (tmp_path / 'missing.json', r'data\.tokenizer_file=\S+missing\.json: no such file; pass'
                                  r' the path of a Hugging Face tokenizer\.json'),
      (tmp_path, r'data\.tokenizer_file=\S+ is a folder; pass the path of a Hugging Face'
                 r' tokenizer\.json in it'),
      (tmp_path / 'broken.json', r'data\.tokenizer_file=\S+broken\.json: tokenizer\.json is not a'
                                 r' Hugging Face tokenizer the tokenizers library reads'),
      (tmp_path / 'latin1.json', r'data\.tokenizer_file=\S+latin1\.json: tokenizer\.json is not'),
  ]:
    with pytest.raises(ConfigError, match=message) as e:
      tokenizers.new_tokenizer(_hf_cfg(path), _never)
    assert '\n' not in str(e.value)


def test_a_relative_missing_file_names_the_folder_it_is_relative_to():
  with pytest.raises(ConfigError, match=fr'no such file \(from {os.getcwd()}\)'):
    tokenizers.new_tokenizer(_hf_cfg('nope/tokenizer.json'), _never)


@pytest.mark.slow
def test_training_with_bpe_end_to_end(tmp_path):
  """gpt_small with a 512-token BPE: 3 steps, then the run folder samples text."""
  import jaxlm
  from tests.configs import tiny_config
  c = tiny_config(data__tokenizer='bpe', data__vocab_size=512, model__vocab_size=0,
                  model__use_bias=True,  # GPT-2's blocks: the run exports
                  data__manual_dir=testdata.shakespeare_dir(),
                  data__tfds_data_dir=testdata.tfds_data_dir(), train__steps=3,
                  train__eval_every=3, train__eval_steps=1, train__checkpoint_every=3,
                  train__sample_tokens=0)
  jaxlm.train(c, str(tmp_path / 'run'))
  assert json.loads((tmp_path / 'run' / rundir.TOKENIZER_FILE).read_text())['kind'] == 'bpe'
  model = jaxlm.load(str(tmp_path / 'run'))
  assert model.config.model.vocab_size == 512
  [ids] = model.generate(['ROMEO:'], 5)
  assert len(ids) == 5 and max(ids) < 512
  text = tokenizers.continue_text(model.tokenizer, 'ROMEO:', model.encode(['ROMEO:'])[0], ids)
  assert text.startswith('ROMEO:') and len(text) > len('ROMEO:')
  # Exported, the tokenizer.json comes along: transformers reads the same ids.
  import transformers
  jaxlm.export_hf(str(tmp_path / 'run'), str(tmp_path / 'hf'))
  hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / 'hf' /
                                                                   'tokenizer.json'))
  sample = 'ROMEO: What, ho! Is it thou, 2026?'
  assert hf_tok.encode(sample) == model.tokenizer.encode(sample).tolist()
