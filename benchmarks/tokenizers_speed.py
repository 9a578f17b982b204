"""Tokenizer encode throughput, MB/s of UTF-8 text: byte, sentencepiece, bpe and tiktoken.

  python benchmarks/tokenizers_speed.py [--megabytes=20] [--doc_bytes=1000] \
      [--vocab_size=4096] [--repeats=2]

The bundled tiny_shakespeare (1.1 MB) repeated to --megabytes and cut into
documents of --doc_bytes, as the data pipeline meets a corpus. SentencePiece
and bpe are trained on tiny_shakespeare itself (--vocab_size); tiktoken reads
the bpe's vocabulary as a ranks file (BPETokenizer.tiktoken_ranks), so it
encodes the same ids. Each kind is timed three ways: encode() on one document
at a time, and encode_batch() (the data pipeline's path) on one thread and on
every core. The thread count is RAYON_NUM_THREADS (jaxlm.data.tokenizers.
encode_threads), which the tokenizers library reads once per process, so each
count is measured in a child process. Best of --repeats runs (a shared machine
slows some of them down). Prints a markdown table.
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from absl import app, flags

from jaxlm.data import tokenizers

_MEGABYTES = flags.DEFINE_float('megabytes', 20.0, 'Corpus size: tiny_shakespeare repeated.')
_DOC_BYTES = flags.DEFINE_integer('doc_bytes', 1000, 'Characters per document.')
_VOCAB_SIZE = flags.DEFINE_integer('vocab_size', 4096, 'Vocabulary of sentencepiece and bpe.')
_REPEATS = flags.DEFINE_integer('repeats', 2, 'Timed runs of each; the fastest is reported.')
_CHILD = flags.DEFINE_string('child', '', '(internal) measure the tokenizers saved in DIR.')

KINDS = ('byte', 'sentencepiece', 'bpe', 'tiktoken')
CORPUS = (pathlib.Path(tokenizers.__file__).parent / 'corpora' / 'tiny_shakespeare'
          / 'input.txt')


def documents(text: str, megabytes: float, doc_bytes: int) -> list[str]:
  """text repeated to about `megabytes` MB, cut into documents of doc_bytes characters."""
  corpus = text * max(1, round(megabytes * 1e6 / len(text.encode('utf-8'))))
  return [corpus[i:i + doc_bytes] for i in range(0, len(corpus), doc_bytes)]


def build(directory: str, vocab_size: int) -> dict:
  """Trains and saves one tokenizer of each kind under directory/KIND; training seconds."""
  docs = documents(CORPUS.read_text('utf-8'), megabytes=0, doc_bytes=1000)  # the corpus once
  seconds = {}
  start = time.perf_counter()
  sp = tokenizers.SentencePieceTokenizer.train(docs, vocab_size)
  seconds['sentencepiece'] = time.perf_counter() - start
  start = time.perf_counter()
  bpe = tokenizers.BPETokenizer.train(iter(docs), vocab_size)
  seconds['bpe'] = time.perf_counter() - start
  tiktoken = tokenizers.TiktokenTokenizer(bpe.tiktoken_ranks(), 'bpe.tiktoken_ranks()')
  built = {'byte': tokenizers.ByteTokenizer(), 'sentencepiece': sp, 'bpe': bpe,
           'tiktoken': tiktoken}
  for kind, tok in built.items():
    tok.save(os.path.join(directory, kind))
  return seconds


def _best_seconds(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def measure(directory: str, docs: list[str], repeats: int, one_by_one: bool) -> dict:
  """MB/s of encode_batch (and of encode() per document) for each saved tokenizer."""
  megabytes = sum(len(d.encode('utf-8')) for d in docs) / 1e6
  out = {'threads': tokenizers.encode_threads(), 'megabytes': megabytes}
  for kind in KINDS:
    tok = tokenizers.load_tokenizer(os.path.join(directory, kind))
    ids = tok.encode_batch(docs[:1000])  # warm-up, and the tokens per byte
    row = {'vocab': tok.vocab_size, 'bytes_per_token':
           sum(len(d.encode('utf-8')) for d in docs[:1000]) / sum(len(x) for x in ids)}
    row['batch'] = megabytes / _best_seconds(lambda: tok.encode_batch(docs), repeats)
    if one_by_one:
      row['loop'] = megabytes / _best_seconds(lambda: [tok.encode(d) for d in docs], repeats)
    out[kind] = row
  return out


def _child(directory: str, threads: int) -> dict:
  env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
  args = [sys.executable, __file__, f'--child={directory}', f'--megabytes={_MEGABYTES.value}',
          f'--doc_bytes={_DOC_BYTES.value}', f'--repeats={_REPEATS.value}']
  out = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
  if out.returncode:
    raise SystemExit(out.stderr[-3000:])
  return json.loads(out.stdout.strip().splitlines()[-1])


def table(one: dict, many: dict, train_seconds: dict) -> str:
  lines = [f'{one["megabytes"]:.1f} MB in {_DOC_BYTES.value}-character documents; MB/s of'
           f' UTF-8 text (best of {_REPEATS.value})', '',
           '| data.tokenizer | vocab | bytes/token | encode() per document | encode_batch,'
           f' 1 thread | encode_batch, {many["threads"]} threads | training |',
           '| --- | --- | --- | --- | --- | --- | --- |']
  for kind in KINDS:
    a, b = one[kind], many[kind]
    trained = f'{train_seconds[kind]:.1f} s' if kind in train_seconds else '-'
    lines.append(f'| {kind} | {a["vocab"]} | {a["bytes_per_token"]:.2f} | {a["loop"]:.1f} |'
                 f' {a["batch"]:.1f} | {b["batch"]:.1f} | {trained} |')
  return '\n'.join(lines)


def main(argv):
  del argv
  if _CHILD.value:
    docs = documents(CORPUS.read_text('utf-8'), _MEGABYTES.value, _DOC_BYTES.value)
    one_by_one = tokenizers.encode_threads() == 1
    print(json.dumps(measure(_CHILD.value, docs, _REPEATS.value, one_by_one)))
    return
  with tempfile.TemporaryDirectory() as directory:
    train_seconds = build(directory, _VOCAB_SIZE.value)
    one = _child(directory, 1)
    many = _child(directory, len(os.sched_getaffinity(0)))  # every core it may use
  print(table(one, many, train_seconds))


if __name__ == '__main__':
  app.run(main)
