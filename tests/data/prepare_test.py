"""Prepared datasets: the same stream as in memory, resumable, shardable, fingerprinted."""

import importlib.util
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from jaxlm.config import ConfigError, FileFormat, TokenizerKind
from jaxlm.data import dataset as dataset_lib
from jaxlm.data import lm as data
from jaxlm.data import prepare as prepare_lib
from jaxlm.data import tokenizers
from tests.testdata import REPO, data_config, files_config, tiny_shakespeare_text


def _one_line(info):
  assert '\n' not in str(info.value), str(info.value)
  return str(info.value)


def _corpus(tmp_path, files=3, lines=400):
  """Files of Shakespeare lines (some non-ASCII), one document a line."""
  text = tiny_shakespeare_text().splitlines()
  folder = tmp_path / 'corpus'
  folder.mkdir()
  for f in range(files):
    body = [f'{text[(f * lines + i) % len(text)]} é{i}' for i in range(lines)]
    (folder / f'{f}.txt').write_text('\n'.join(body) + '\n', encoding='utf-8')
  return folder


def _files(root) -> dict:
  """Every file of a dataset folder (relative path -> bytes)."""
  out = {}
  for dirpath, _, names in os.walk(root):
    for name in names:
      path = os.path.join(dirpath, name)
      out[os.path.relpath(path, root)] = open(path, 'rb').read()
  return out


@pytest.mark.parametrize('file_format', ['text', 'lines', 'jsonl'])
@pytest.mark.parametrize('tokenizer', ['char', 'byte'])
def test_prepared_stream_is_the_in_memory_stream(tmp_path, monkeypatch, file_format, tokenizer):
  folder = _corpus(tmp_path)
  if file_format == 'jsonl':
    for f in folder.glob('*.txt'):
      rows = [json.dumps({'text': line}) for line in f.read_text().splitlines()]
      f.write_text('\n'.join(rows) + '\n')
  monkeypatch.setattr(prepare_lib.pieces_lib, 'PIECE_BYTES', 10_000)  # cut files into pieces
  cfg = files_config(str(folder / '*.txt'), file_format=FileFormat(file_format),
                     tokenizer=TokenizerKind(tokenizer))
  manifest = prepare_lib.prepare(cfg, str(tmp_path / 'ds'), workers=2, log=lambda m: None)
  tok = tokenizers.load_tokenizer(str(tmp_path / 'ds'))
  for split in (cfg.train_split, cfg.eval_split):
    stream = dataset_lib.open_split(str(tmp_path / 'ds'), split, manifest)
    expected = data.tokenize_split(cfg, tok, split)
    np.testing.assert_array_equal(np.asarray(stream), expected)
    assert stream.dtype == np.uint8  # 256 ids or fewer: a byte a token
    offsets = stream.doc_offsets()
    assert offsets[0] == 0 and offsets[-1] == len(stream)
    assert len(offsets) - 1 == stream.num_documents == manifest['splits'][split]['documents']
  if file_format != 'text':  # the held-out tenth starts at a line
    assert len(manifest['splits'][cfg.train_split]['shards']) > 3


def test_byte_pieces_are_the_line_by_line_tokens(tmp_path, monkeypatch):
  # The byte tokenizer's vectorized path (jaxlm/data/byte_pieces.py) writes the bytes the
  # line-by-line path writes, and gives way to it wherever they could differ.
  from jaxlm.data import byte_pieces
  from jaxlm.data import pieces as pieces_lib
  lines = tiny_shakespeare_text().splitlines()[:600]
  clean = tmp_path / 'clean'
  clean.mkdir()
  odd = ['caf\u00e9 \\n "quoted" \t tab', '中文 and 😀 as UTF-8']
  rows = [{'text': f'{line} é{i}', 'n': i, 'tags': ['a'] * (i % 3)} for i, line in
          enumerate(lines)]
  (clean / 'a.jsonl').write_text('\n'.join(json.dumps(r, ensure_ascii=i % 2 == 0)
                                           for i, r in enumerate(rows)) + '\n' +
                                 '\n'.join(json.dumps({'text': t}) for t in odd))  # no last \n
  # a lone surrogate escape, which json.loads keeps and pyarrow refuses: the slow path
  (clean / 'b.jsonl').write_text(json.dumps({'text': 'lone \ud800 surrogate'}) + '\n')
  (clean / 'c.jsonl').write_text('{"text": "one"}\n\n{"text": "after an empty line"}\n')
  (clean / 'd.jsonl').write_text('{"text": "a"}\n{"text": 7}\n')  # not a string: one line
  # lines: "\r"s that end a line are stripped, empty lines dropped, on the fast path too
  (clean / 'e.jsonl').write_bytes(b'windows\r\nline ends\r\n\r\nmid\rdle\ntwo\r\r\n\n\nlast\r')
  # ... up to MAX_RETURNS of them a line; more: the slow path
  (clean / 'f.jsonl').write_bytes(b'many' + b'\r' * (byte_pieces.MAX_RETURNS + 1) + b'\nnext\n')
  monkeypatch.setattr(pieces_lib, 'PIECE_BYTES', 5_000)
  for fmt, glob, slow in (('jsonl', 'ab', {'b.jsonl'}), ('lines', 'abcef', {'f.jsonl'})):
    cfg = files_config(str(clean / f'[{glob}].jsonl'), file_format=FileFormat(fmt),
                       tokenizer=TokenizerKind.BYTE)
    parts = pieces_lib.source_parts(cfg)
    pieces = [p for split in (cfg.train_split, cfg.eval_split)
              for p in pieces_lib.split_pieces(cfg, split, parts)]
    fast = [byte_pieces.tokens(cfg, p) is not None for p in pieces]
    assert sum(fast) >= 5, fast
    assert {os.path.basename(p.path) for p, f in zip(pieces, fast) if not f} == slow, fmt
    out = {}
    for name, patch in (('fast', False), ('slow', True)):
      if patch:
        monkeypatch.setattr(byte_pieces, 'tokens', lambda cfg, piece: None)
      prepare_lib.prepare(cfg, str(tmp_path / f'{fmt}_{name}'), workers=1, log=lambda m: None)
      out[name] = {k: v for k, v in _files(tmp_path / f'{fmt}_{name}').items()
                   if k.endswith(('.bin', '.idx'))}
    monkeypatch.undo()
    monkeypatch.setattr(pieces_lib, 'PIECE_BYTES', 5_000)
    assert out['fast'] and out['fast'] == out['slow'], fmt
  cfg = files_config(str(clean / 'd.jsonl'), file_format=FileFormat.JSONL,
                     tokenizer=TokenizerKind.BYTE)
  with pytest.raises(ConfigError, match=r'd\.jsonl: the line at byte 14 has no text field'):
    prepare_lib.prepare(cfg, str(tmp_path / 'bad'), workers=1, log=lambda m: None)


def test_byte_pieces_take_threads_only_where_they_can_run(monkeypatch):
  # Threads suit pieces whose work releases the GIL; JSONL's needs pyarrow, else the
  # line-by-line path, which takes processes to use every core.
  from jaxlm.data import byte_pieces
  lines, jsonl = (files_config('x', file_format=FileFormat(f), tokenizer=TokenizerKind.BYTE)
                  for f in ('lines', 'jsonl'))
  assert byte_pieces.applies(lines, TokenizerKind.BYTE)
  assert byte_pieces.applies(jsonl, TokenizerKind.BYTE)
  assert not byte_pieces.applies(lines, TokenizerKind.CHAR)
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, 'find_spec',
                      lambda name, *a: None if name == 'pyarrow' else real(name, *a))
  assert byte_pieces.applies(lines, TokenizerKind.BYTE)
  assert not byte_pieces.applies(jsonl, TokenizerKind.BYTE)


def test_tfds_source_prepares_the_bundled_corpus(tmp_path):
  cfg = data_config()
  manifest = prepare_lib.prepare(cfg, str(tmp_path / 'ds'), log=lambda m: None)
  tok = tokenizers.load_tokenizer(str(tmp_path / 'ds'))
  stream = dataset_lib.open_split(str(tmp_path / 'ds'), 'validation', manifest)
  np.testing.assert_array_equal(np.asarray(stream), data.tokenize_split(cfg, tok, 'validation'))
  assert manifest['parts']['source']['dataset'] == 'tiny_shakespeare'


@pytest.mark.parametrize('dies', ['before the third piece',
                                  'after its shards are in place, before its record'])
def test_an_interrupted_prepare_resumes_to_the_same_bytes(tmp_path, monkeypatch, dies):
  folder = _corpus(tmp_path, files=4)
  cfg = files_config(str(folder / '*.txt'), file_format=FileFormat.LINES)
  prepare_lib.prepare(cfg, str(tmp_path / 'whole'), workers=1, log=lambda m: None)
  real, calls = prepare_lib._prepare_piece, []
  real_write = dataset_lib.write_json

  def dies_on_the_third(*args):
    calls.append(1)
    if len(calls) == 3:
      raise KeyboardInterrupt
    return real(*args)

  def dies_writing_the_third_record(path, data):
    if str(path).endswith('.done.json'):
      calls.append(1)
      if len(calls) == 3:
        raise KeyboardInterrupt
    return real_write(path, data)

  if dies.startswith('before'):
    monkeypatch.setattr(prepare_lib, '_prepare_piece', dies_on_the_third)
  else:  # its shard files are renamed into place: the rerun writes them again
    monkeypatch.setattr(dataset_lib, 'write_json', dies_writing_the_third_record)
  with pytest.raises(KeyboardInterrupt):
    prepare_lib.prepare(cfg, str(tmp_path / 'cut'), workers=1, log=lambda m: None)
  assert not (tmp_path / 'cut' / 'manifest.json').exists()
  with pytest.raises(ConfigError, match='an unfinished prepare') as info:
    dataset_lib.read_manifest(str(tmp_path / 'cut'))  # never taken for a complete one
  _one_line(info)
  monkeypatch.undo()
  lines = []
  prepare_lib.prepare(cfg, str(tmp_path / 'cut'), workers=1, log=lines.append)
  assert any('2 of 5 pieces already complete' in line for line in lines), lines
  whole, cut = _files(tmp_path / 'whole'), _files(tmp_path / 'cut')
  assert sorted(whole) == sorted(cut)
  for name in whole:
    assert whole[name] == cut[name], name


def test_shards_of_the_work_give_what_one_process_gives(tmp_path):
  folder = _corpus(tmp_path, files=5)
  cfg = files_config(str(folder / '*.txt'), file_format=FileFormat.LINES)
  prepare_lib.prepare(cfg, str(tmp_path / 'one'), workers=1, log=lambda m: None)
  quiet = lambda m: None  # noqa: E731
  assert prepare_lib.prepare(cfg, str(tmp_path / 'three'), num_shards=3, shard_index=0,
                             workers=1, log=quiet) == {}
  assert prepare_lib.prepare(cfg, str(tmp_path / 'three'), num_shards=3, shard_index=2,
                             workers=1, log=quiet) == {}
  manifest = prepare_lib.prepare(cfg, str(tmp_path / 'three'), num_shards=3, shard_index=1,
                                 workers=1, log=quiet)
  assert manifest['splits'] == json.loads((tmp_path / 'one' / 'manifest.json').read_text())[
      'splits']
  assert _files(tmp_path / 'one') == _files(tmp_path / 'three')


def test_changed_input_or_settings_are_refused_with_what_changed(tmp_path):
  folder = _corpus(tmp_path, files=2)
  cfg = files_config(str(folder / '*.txt'), file_format=FileFormat.LINES)
  out = str(tmp_path / 'ds')
  prepare_lib.prepare(cfg, out, workers=1, log=lambda m: None)
  (folder / '1.txt').write_text('changed\n')
  with pytest.raises(ConfigError, match=r'prepared from other input \(source\.splits') as info:
    prepare_lib.prepare(cfg, out, workers=1, log=lambda m: None)
  _one_line(info)
  run = files_config(str(folder / '*.txt'), file_format=FileFormat.LINES, dataset_dir=out,
                     tokenizer=TokenizerKind.BYTE)
  with pytest.raises(ConfigError, match=r'does not match this run: tokenizer\.kind was "char",'
                     r' now "byte"') as info:
    prepare_lib.prepared(run, log=lambda m: None)
  _one_line(info)
  other = tokenizers.CharTokenizer('abc')
  with pytest.raises(ConfigError, match='tokenized with another tokenizer') as info:
    prepare_lib.prepared(files_config(str(folder / '*.txt'), dataset_dir=out,
                                      file_format=FileFormat.LINES), other, log=lambda m: None)
  _one_line(info)


def test_bad_dataset_folders_get_one_line(tmp_path):
  missing = str(tmp_path / 'nope')
  with pytest.raises(ConfigError, match='does not exist; prepare it') as info:
    dataset_lib.read_manifest(missing)
  _one_line(info)
  folder = _corpus(tmp_path, files=1)
  cfg = files_config(str(folder / '*.txt'), file_format=FileFormat.LINES)
  out = tmp_path / 'ds'
  prepare_lib.prepare(cfg, str(out), workers=1, log=lambda m: None)
  manifest = json.loads((out / 'manifest.json').read_text())
  (out / 'manifest.json').write_text(json.dumps({**manifest, 'format': 0}))
  with pytest.raises(ConfigError, match='dataset format 0; this jaxlm reads format 1') as info:
    dataset_lib.read_manifest(str(out))
  _one_line(info)
  (tmp_path / 'busy').mkdir()
  (tmp_path / 'busy' / 'mine.txt').write_text('keep me')
  with pytest.raises(ConfigError, match='holds other files') as info:
    prepare_lib.prepare(cfg, str(tmp_path / 'busy'), workers=1, log=lambda m: None)
  assert (tmp_path / 'busy' / 'mine.txt').read_text() == 'keep me'
  assert sorted(os.listdir(tmp_path / 'busy')) == ['mine.txt']
  with pytest.raises(ConfigError, match=r'more than a shard holds \(--shard_tokens=100\)'):
    prepare_lib.prepare(files_config(str(folder / '*.txt')), str(tmp_path / 'small'),
                        workers=1, shard_tokens=100, log=lambda m: None)


def test_a_second_run_on_the_same_input_tokenizes_nothing(tmp_path, monkeypatch):
  folder = _corpus(tmp_path, files=2)
  cfg = files_config(str(folder / '*.txt'), file_format=FileFormat.LINES,
                     cache_dir=str(tmp_path / 'cache'))
  first = prepare_lib.prepared(cfg, log=lambda m: None)

  def no_encoding(*_):
    raise AssertionError('tokenized again')

  monkeypatch.setattr(tokenizers.CharTokenizer, 'encode_batch', no_encoding)
  monkeypatch.setattr(tokenizers.CharTokenizer, 'train', no_encoding)
  lines = []
  assert prepare_lib.prepared(cfg, log=lines.append) == first
  assert 'no tokenizing' in lines[0]
  # Resuming with the run's tokenizer (the one that folder holds) reads it too.
  assert prepare_lib.prepared(cfg, tokenizers.load_tokenizer(first), log=lines.append) == first
  assert os.listdir(tmp_path / 'cache') == [os.path.basename(first)]  # no partial folders


def test_two_processes_read_exactly_the_global_batch(tmp_path):
  folder = _corpus(tmp_path, files=2)
  cfg = files_config(str(folder / '*.txt'), file_format=FileFormat.LINES,
                     tokenizer=TokenizerKind.BYTE)
  manifest = prepare_lib.prepare(cfg, str(tmp_path / 'ds'), workers=1, log=lambda m: None)
  stream = dataset_lib.open_split(str(tmp_path / 'ds'), cfg.train_split, manifest)
  memory = np.asarray(stream)
  n = data.num_windows(len(memory), 16)
  for step in (0, 3, n // 8 + 1):  # the last crosses an epoch
    kwargs = dict(batch_size=8, seq_len=16, seed=1)
    whole = data.train_batch(memory, step, **kwargs)
    parts = [data.train_batch(stream, step, process_index=i, process_count=2, **kwargs)
             for i in range(2)]
    for key in ('inputs', 'targets'):
      np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])


def gcs_prepare(corpus: str) -> None:
  """The subprocess's body: prepare to gs:// (fsspec's memory store), read it back."""
  import fsspec

  from tests import rundir_test
  for protocol in ('gs', 'gcs'):
    fsspec.register_implementation(protocol, rundir_test.InMemoryGCS, clobber=True)
  cfg = files_config(f'{corpus}/*.txt', file_format=FileFormat.LINES)
  remote = 'gs://bucket/datasets/lines'
  manifest = prepare_lib.prepare(cfg, remote, workers=1, log=lambda m: None)
  tok = tokenizers.load_tokenizer(remote)
  for split in (cfg.train_split, cfg.eval_split):
    stream = dataset_lib.open_split(remote, split, manifest)
    np.testing.assert_array_equal(np.asarray(stream), data.tokenize_split(cfg, tok, split))
    np.testing.assert_array_equal(stream.windows([3, 50], 9)[1], np.asarray(stream)[50:59])
  print(json.dumps(sorted(rundir_test.InMemoryGCS.store)))


def test_a_dataset_on_gcs_is_written_and_read_through_epath(tmp_path):
  corpus = _corpus(tmp_path, files=2)
  env = dict(os.environ, EPATH_USE_TF='0', PYTHONPATH=str(REPO))
  work = tmp_path / 'cwd'
  work.mkdir()
  result = subprocess.run(
      [sys.executable, '-c', f'from tests.data import prepare_test;'
       f' prepare_test.gcs_prepare({str(corpus)!r})'],
      cwd=work, env=env, capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  stored = json.loads(result.stdout.splitlines()[-1])
  assert '/bucket/datasets/lines/manifest.json' in stored
  assert '/bucket/datasets/lines/train/00000-000.bin' in stored
  assert os.listdir(work) == []  # nothing landed on local disk


def test_parquet_files_give_their_text_column(tmp_path):
  pa = pytest.importorskip('pyarrow')
  import pyarrow.parquet as pq
  docs = tiny_shakespeare_text().split('\n\n')[:300]
  for name, part in (('train', docs[:250]), ('eval', docs[250:])):
    pq.write_table(pa.table({'text': part, 'n': list(range(len(part)))}),
                   tmp_path / f'{name}.parquet', row_group_size=64)
  cfg = files_config(str(tmp_path / 'train.parquet'), str(tmp_path / 'eval.parquet'),
                     file_format=FileFormat.PARQUET, tokenizer=TokenizerKind.BYTE)
  manifest = prepare_lib.prepare(cfg, str(tmp_path / 'ds'), workers=1, log=lambda m: None)
  assert manifest['splits']['train']['documents'] == 250
  stream = dataset_lib.open_split(str(tmp_path / 'ds'), 'validation', manifest)
  expected = np.frombuffer('\n'.join(docs[250:]).encode(), np.uint8)
  np.testing.assert_array_equal(np.asarray(stream), expected)
  with pytest.raises(ConfigError, match='parquet needs data.eval_files'):
    prepare_lib.prepare(files_config(str(tmp_path / 'train.parquet'),
                                     file_format=FileFormat.PARQUET),
                        str(tmp_path / 'no_eval'), workers=1, log=lambda m: None)
  bad = files_config(str(tmp_path / 'train.parquet'), str(tmp_path / 'eval.parquet'),
                     file_format=FileFormat.PARQUET, text_key='body')
  with pytest.raises(ConfigError, match=r"has no column data.text_key='body'; it has: text, n"):
    prepare_lib.prepare(bad, str(tmp_path / 'no_col'), workers=1, log=lambda m: None)


def test_a_full_disk_is_one_line_and_keeps_the_complete_pieces(tmp_path, monkeypatch):
  import errno
  folder = _corpus(tmp_path, files=3)
  cfg = files_config(str(folder / '*.txt'), file_format=FileFormat.LINES)
  real, calls = prepare_lib._ShardWriter.add, []

  def fills(self, *args):
    calls.append(1)
    if len(calls) == 2:
      raise OSError(errno.ENOSPC, 'No space left on device')
    return real(self, *args)

  monkeypatch.setattr(prepare_lib._ShardWriter, 'add', fills)
  out = tmp_path / 'ds'
  with pytest.raises(ConfigError, match=r'the disk holding \S+ is full .*complete pieces are'
                     ' kept') as info:
    prepare_lib.prepare(cfg, str(out), workers=1, log=lambda m: None)
  _one_line(info)
  assert (out / 'train' / '00000.done.json').exists()
  assert not [f for f in os.listdir(out / 'train') if '.tmp-' in f]  # no half-written shard
  monkeypatch.setattr(prepare_lib._ShardWriter, 'add', real)
  assert prepare_lib.prepare(cfg, str(out), workers=1, log=lambda m: None)['splits']


def test_bpe_is_trained_once_by_prepare_and_kept_in_the_dataset(tmp_path):
  folder = _corpus(tmp_path, files=2)
  cfg = files_config(str(folder / '*.txt'), file_format=FileFormat.LINES,
                     tokenizer=TokenizerKind.BPE, vocab_size=400)
  manifest = prepare_lib.prepare(cfg, str(tmp_path / 'ds'), workers=2, log=lambda m: None)
  tok = tokenizers.load_tokenizer(str(tmp_path / 'ds'))
  assert tok.kind is TokenizerKind.BPE and tok.vocab_size == manifest['vocab_size'] == 400
  for split in (cfg.train_split, cfg.eval_split):
    stream = dataset_lib.open_split(str(tmp_path / 'ds'), split, manifest)
    np.testing.assert_array_equal(np.asarray(stream), data.tokenize_split(cfg, tok, split))
    assert np.sum(np.asarray(stream) == tok.eos_id) == stream.num_documents


def test_a_small_split_is_cut_into_16_pieces_a_large_one_into_piece_bytes(tmp_path, monkeypatch):
  from jaxlm.data import pieces as pieces_lib
  folder = _corpus(tmp_path, files=2, lines=2000)  # about 2 x 65 KB
  cfg = files_config(str(folder / '1.txt'), file_format=FileFormat.LINES,
                     eval_files=str(folder / '0.txt'))
  parts = pieces_lib.source_parts(cfg)
  total = parts['splits'][cfg.train_split][0]['bytes']

  def sizes():
    pieces = pieces_lib.split_pieces(cfg, cfg.train_split, parts)
    assert sum(p.num_bytes for p in pieces) == total
    return [p.num_bytes for p in pieces]

  monkeypatch.setattr(pieces_lib, 'MIN_PIECE_BYTES', 1_000)
  monkeypatch.setattr(pieces_lib, 'PIECE_BYTES', total // 4)  # a split of < 16 of them
  assert len(sizes()) == -(-total // (total // 16)) and set(sizes()[:16]) == {total // 16}
  monkeypatch.setattr(pieces_lib, 'PIECE_BYTES', total // 32)  # a split of 32 of them
  assert set(sizes()[:32]) == {total // 32}
  monkeypatch.setattr(pieces_lib, 'PIECE_BYTES', total)
  monkeypatch.setattr(pieces_lib, 'MIN_PIECE_BYTES', total // 3)  # never below the least
  assert sizes()[:3] == [total // 3] * 3
  monkeypatch.undo()
  assert sizes() == [total]  # 16 MB pieces, at least 1 MB: a 65 KB file is one


def test_sample_spans_every_piece_and_a_small_corpus_is_taken_whole(tmp_path, monkeypatch):
  from jaxlm.data import pieces as pieces_lib
  folder = _corpus(tmp_path, files=3, lines=400)
  monkeypatch.setattr(pieces_lib, 'PIECE_BYTES', 5_000)
  cfg = files_config(str(folder / '*.txt'), file_format=FileFormat.LINES,
                     eval_files=str(folder / '0.txt'))
  parts = pieces_lib.source_parts(cfg)
  pieces = pieces_lib.split_pieces(cfg, cfg.train_split, parts)
  every = [list(pieces_lib.piece_documents(cfg, p)) for p in pieces]
  assert len(pieces) > 6
  sample = list(pieces_lib.sample_documents(cfg, pieces, 12_000))
  size = sum(len(d.encode()) for d in sample)
  longest = max(len(d.encode()) for docs in every for d in docs)
  assert 12_000 <= size <= 12_000 + len(pieces) * longest
  # Each piece gives the first documents of its share, and every piece gives some.
  at = 0
  for docs in every:
    taken = 0
    while at < len(sample) and taken < len(docs) and sample[at] == docs[taken]:
      at, taken = at + 1, taken + 1
    assert 0 < taken < len(docs)
  assert at == len(sample)
  whole = sum(p.num_bytes for p in pieces)
  assert list(pieces_lib.sample_documents(cfg, pieces, whole)) == sum(every, [])


def test_bpe_learns_from_a_sample_and_its_setting_is_fingerprinted(tmp_path, monkeypatch):
  from jaxlm.data import pieces as pieces_lib
  folder = _corpus(tmp_path, files=2, lines=2000)  # about 150 KB of training text
  monkeypatch.setattr(pieces_lib, 'PIECE_BYTES', 20_000)
  monkeypatch.setattr(prepare_lib, 'MIN_SAMPLE_BYTES', 0)
  cfg = files_config(str(folder / '*.txt'), file_format=FileFormat.LINES,
                     tokenizer=TokenizerKind.BPE, vocab_size=300)
  whole = tokenizers.BPETokenizer.train(data.documents(cfg, cfg.train_split), 300)
  monkeypatch.setattr(prepare_lib, 'SAMPLE_BYTES_PER_TOKEN', 1000)  # 300 KB: all of it
  prepare_lib.prepare(cfg, str(tmp_path / 'all'), workers=1, log=lambda m: None)
  assert tokenizers.load_tokenizer(str(tmp_path / 'all')).digest() == whole.digest()
  monkeypatch.setattr(prepare_lib, 'SAMPLE_BYTES_PER_TOKEN', 133)  # 40 KB of 150
  lines = []
  prepare_lib.prepare(cfg, str(tmp_path / 'sample'), workers=1, log=lines.append)
  assert any(re.search(r'built the bpe tokenizer \(300 ids\) from 0\.04 MB of the 0\.1\d MB',
                       line) for line in lines), lines
  pieces = pieces_lib.split_pieces(cfg, cfg.train_split, pieces_lib.source_parts(cfg))
  sampled = tokenizers.BPETokenizer.train(pieces_lib.sample_documents(cfg, pieces, 39_900), 300)
  assert tokenizers.load_tokenizer(str(tmp_path / 'sample')).digest() == sampled.digest()
  assert sampled.digest() != whole.digest()
  # A sample size set by hand is part of the fingerprint; the default adds nothing to it
  # (datasets prepared before the setting keep their fingerprint).
  assert 'sample_mb' not in prepare_lib.tokenizer_parts(cfg, None)
  run = files_config(str(folder / '*.txt'), file_format=FileFormat.LINES, vocab_size=300,
                     tokenizer=TokenizerKind.BPE, tokenizer_sample_mb=64,
                     dataset_dir=str(tmp_path / 'sample'))
  assert prepare_lib.tokenizer_parts(run, None)['sample_mb'] == 64
  assert prepare_lib.sample_bytes(run) == 64 << 20
  with pytest.raises(ConfigError, match=r'tokenizer\.sample_mb') as info:
    prepare_lib.prepared(run, log=lambda m: None)
  _one_line(info)


def test_the_default_sample_is_4_kb_per_vocabulary_entry_and_at_least_16_mb():
  cfg = lambda **kw: files_config('unused/*.txt', tokenizer=TokenizerKind.BPE, **kw)
  assert prepare_lib.sample_bytes(cfg(vocab_size=4096)) == 16 << 20
  assert prepare_lib.sample_bytes(cfg(vocab_size=50257)) == 4096 * 50257
  assert prepare_lib.sample_bytes(cfg(vocab_size=300)) == 16 << 20
  with pytest.raises(ConfigError, match=r'data\.tokenizer_sample_mb=-1 must be 0') as info:
    prepare_lib.sample_bytes(cfg(vocab_size=300, tokenizer_sample_mb=-1))
  _one_line(info)


def test_a_given_tokenizer_file_is_part_of_the_fingerprint(tmp_path):
  folder = _corpus(tmp_path, files=1)
  bpe = tokenizers.BPETokenizer.train(tiny_shakespeare_text().splitlines()[:2000], 300)
  bpe.save(str(tmp_path / 'tok'))
  ranks = tmp_path / 'ranks.tiktoken'
  ranks.write_bytes(bpe.tiktoken_ranks())
  cfg = files_config(str(folder / '*.txt'), file_format=FileFormat.LINES,
                     tokenizer=TokenizerKind.TIKTOKEN, tokenizer_file=str(ranks),
                     cache_dir=str(tmp_path / 'cache'))
  first = prepare_lib.prepared(cfg, log=lambda m: None)
  assert tokenizers.load_tokenizer(first).kind is TokenizerKind.TIKTOKEN
  ranks.write_bytes(tokenizers.BPETokenizer.train(['other text ' * 50], 260).tiktoken_ranks())
  assert prepare_lib.prepared(cfg, log=lambda m: None) != first  # a new file, new tokens
