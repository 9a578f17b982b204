"""Data at scale: prepare throughput and memory, time to the first step, training memory.

  python benchmarks/data_scale.py [--sizes_mb=50,500,2000] \
      [--tokenizers=byte,sentencepiece] [--file_format=jsonl] \
      [--work=/tmp/jaxlm_data_scale] [--today=REV] [--repeats=N] [--train_only]

Builds corpora of about the given sizes by concatenating real text (the
bundled tiny Shakespeare, cut into speeches, and, where ../shared is beside
the checkout, the AG News descriptions), as JSONL files of 64 MB, one
document a line (--file_format=lines: plain text files, one document a
line, its newlines made spaces). For each size and tokenizer it runs, each in a fresh
process: `python -m jaxlm.prepare` (wall time, MB/s, MB/s per core, peak
memory of the main process and of the largest worker), the tokenizer's own
single-process batched encode speed on 16 MB (the goal: prepare reaches 80%
of it times the cores; the tokenizing phase's own rate, which leaves out
starting Python, hashing the source and building the tokenizer, is also
reported, with the tokenizer's build time), and 1 + --repeats 20-step
training runs of a small model on the prepared folder (time from launch to
the first train step, peak memory: the first run's, and the median of the
others, which find the first's XLA compilation cache).
With --today=REV (a git revision from before prepared datasets, e.g.
b1ca81d), the same 50 MB corpus is also trained from raw text by that
revision, which tokenized in memory at every start: the figures side by side.
"""

from __future__ import annotations

import json
import os
import pathlib
import resource
import runpy
import subprocess
import sys
import time

from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared' / 'data'
FILE_BYTES = 64 << 20
TINY = ['--config.model.num_layers=2', '--config.model.d_model=64', '--config.model.d_ff=256',
        '--config.model.num_heads=2', '--config.data.seq_len=64', '--config.data.batch_size=16',
        '--config.train.steps=20', '--config.train.log_every=1', '--config.train.eval_every=20',
        '--config.train.eval_steps=1', '--config.train.checkpoint_every=1000',
        '--config.train.sample_tokens=0', '--config.train.warmup_steps=2']


def _documents() -> list[str]:
  text = (REPO / 'jaxlm/data/corpora/tiny_shakespeare/input.txt').read_text()
  docs = [d for d in text.split('\n\n') if d.strip()]
  agnews = SHARED / 'ag_news' / 'test.csv'
  if agnews.exists():  # ../shared, when beside the checkout: more varied text
    import csv
    with open(agnews, newline='') as f:
      docs += [f'{row[1]}\n{row[2]}' for row in csv.reader(f)]
  return docs


def build_corpus(folder: pathlib.Path, size: int, file_format: str = 'jsonl') -> pathlib.Path:
  """JSONL (or lines) files of about FILE_BYTES each, `size` bytes of text in all."""
  done = folder / 'DONE'
  if done.exists():
    return folder
  folder.mkdir(parents=True, exist_ok=True)
  docs, written, n, i = _documents(), 0, 0, 0
  while written < size:
    with open(folder / f'{n:04d}.{_EXT[file_format]}', 'w') as f:
      at = 0
      while at < FILE_BYTES and written < size:
        doc = docs[i % len(docs)]
        line = (json.dumps({'text': doc}) if file_format == 'jsonl'
                else doc.replace('\n', ' ')) + '\n'
        f.write(line)
        at += len(line)
        written += len(line)
        i += 1
    n += 1
  done.write_text(str(written))
  return folder


def measured(args: list[str], env=None, first_line: str | None = None) -> dict:
  """Runs `python benchmarks/data_scale.py --measure ARGS`: wall, first-line time, peak RSS."""
  cmd = [sys.executable, __file__, '--measure', *args]
  start = time.time()
  proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=env)
  first, lines = None, []
  for line in proc.stdout:
    lines.append(line)
    if first is None and first_line and first_line in line:
      first = time.time() - start
  proc.wait()
  if proc.returncode:
    raise RuntimeError(''.join(lines[-30:]))
  usage = json.loads([x for x in lines if x.startswith('{"maxrss')][-1])
  return {'wall_s': time.time() - start, 'first_s': first, 'lines': lines,
          'rss_mb': usage['maxrss'] / 1024, 'worker_rss_mb': usage['children'] / 1024}


def _measure(argv: list[str]) -> None:
  """Child: runs the module in argv, then prints its and its children's peak RSS (KiB)."""
  import atexit

  def report():
    print(json.dumps({'maxrss': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      'children': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}),
          flush=True)

  atexit.register(report)
  if argv[0] == '-m':
    sys.argv = [argv[1], *argv[2:]]
    runpy.run_module(argv[1], run_name='__main__', alter_sys=True)
  else:
    sys.argv = argv
    runpy.run_path(argv[0], run_name='__main__')


_EXT = {'jsonl': 'jsonl', 'lines': 'txt'}
_SUFFIX = {'jsonl': '', 'lines': '_lines'}  # (the JSONL corpora keep their folders' names)


def _document(line: str, file_format: str) -> str:
  return json.loads(line)['text'] if file_format == 'jsonl' else line.rstrip('\n')


def encode_speed(corpus: pathlib.Path, dataset: pathlib.Path, file_format: str) -> float:
  """MB/s of the dataset's tokenizer on 16 MB of the corpus: one process, batched."""
  docs, size = [], 0
  with open(sorted(corpus.glob(f'*.{_EXT[file_format]}'))[0]) as f:
    for line in f:
      docs.append(_document(line, file_format))
      size += len(docs[-1].encode())
      if size > 16 << 20:
        break
  sample = dataset.parent / f'{dataset.name}_encode_sample.json'
  sample.write_text(json.dumps(docs))
  code = f'''
import json, time, os
os.environ['RAYON_NUM_THREADS'] = '1'
from jaxlm.data import tokenizers
tok = tokenizers.load_tokenizer({str(dataset)!r})
docs = json.load(open({str(sample)!r}))
start = time.time()
for i in range(0, len(docs), 2048):
  tok.encode_batch(docs[i:i + 2048])
print({size} / (time.time() - start) / 1e6)
'''
  try:
    out = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                         text=True, check=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
  finally:
    sample.unlink()
  return float(out.stdout.strip().splitlines()[-1])


def settle(corpus: pathlib.Path) -> None:
  """Before a measured prepare: earlier rows' writes flushed, the corpus read once.

  The tokenizer's own speed is measured on text in memory, so prepare reads
  the corpus from the page cache too (where it fits): the figures compare
  tokenizing, not this disk. (Reading from the disk adds the corpus's size
  over its read speed, twice: prepare hashes the files, then tokenizes them.)
  """
  os.sync()
  for f in sorted(corpus.iterdir()):
    with open(f, 'rb') as src:
      while src.read(16 << 20):
        pass


def phases(lines: list[str]) -> dict:
  """From prepare's output: the tokenizer's build time and the tokenizing phase's MB/s.

  The phase's rate is its last progress line's: bytes over the time since the
  pieces were handed out (after the source is hashed and the tokenizer built;
  starting worker processes, where it uses them, is in it).
  """
  built = [x for x in lines if 'prepare: built the' in x]
  progress = [x for x in lines if ' pieces, ' in x and ' MB/s' in x]
  return {'tokenizer_build_s': float(built[-1].rsplit(' in ', 1)[1].rstrip('s\n'))
          if built else 0.0,
          'tokenize_mb_s': float(progress[-1].split(' MB/s')[0].rsplit(', ', 1)[1])
          if progress else None}


def data_flags(corpus: pathlib.Path, tokenizer: str, file_format: str) -> list[str]:
  flags = ['--config.data.source=files', f'--config.data.file_format={file_format}',
           f'--config.data.train_files={corpus}/*.{_EXT[file_format]}',
           f'--config.data.tokenizer={tokenizer}']
  if tokenizer in ('sentencepiece', 'bpe'):
    flags.append('--config.data.vocab_size=4096')
  return flags


_SIZES = flags.DEFINE_string('sizes_mb', '50,500,2000', 'Corpus sizes, MB.')
_TOKENIZERS = flags.DEFINE_string('tokenizers', 'byte,sentencepiece', 'data.tokenizer kinds.')
_FORMAT = flags.DEFINE_enum('file_format', 'jsonl', ['jsonl', 'lines'],
                             'The corpus files: JSONL, or plain lines.')
_WORK = flags.DEFINE_string('work', '/tmp/jaxlm_data_scale', 'Scratch folder.')
_TODAY = flags.DEFINE_string('today', '', 'A git revision to compare on the first size.')
_TRAIN_ONLY = flags.DEFINE_bool('train_only', False, 'Reuse the datasets an earlier run'
                                 ' prepared (under --work): only the training runs.')
_REPEATS = flags.DEFINE_integer('repeats', 1, 'Prepares (and encode speeds) per row, and'
                                ' training runs after the first: medians are reported.')


def main() -> None:
  if len(sys.argv) > 1 and sys.argv[1] == '--measure':
    return _measure(sys.argv[2:])
  app.run(_main)


def _main(_) -> None:
  a = type('Args', (), {'sizes_mb': _SIZES.value, 'tokenizers': _TOKENIZERS.value,
                        'work': _WORK.value, 'today': _TODAY.value, 'fmt': _FORMAT.value,
                        'repeats': max(1, _REPEATS.value), 'train_only': _TRAIN_ONLY.value})
  work = pathlib.Path(a.work)
  env = dict(os.environ, PYTHONPATH=str(REPO), JAXLM_DATASET_CACHE=str(work / 'cache'))
  cores = os.cpu_count()
  print(f'{cores} cores; corpus: tiny Shakespeare speeches'
        f'{" + AG News (../shared)" if (SHARED / "ag_news").exists() else ""}, {a.fmt}')
  rows = []
  for size_mb in [int(s) for s in a.sizes_mb.split(',')]:
    corpus = build_corpus(work / f'corpus_{size_mb}mb{_SUFFIX[a.fmt]}', size_mb << 20, a.fmt)
    mb = int((corpus / 'DONE').read_text()) / 1e6
    for tok in a.tokenizers.split(','):
      out = work / f'dataset_{size_mb}mb{_SUFFIX[a.fmt]}_{tok}'
      preps, speeds = [], []
      reuse = a.train_only and (out / 'manifest.json').exists()
      for _ in range(0 if reuse else a.repeats):  # prepare and the tokenizer's own speed
        if out.exists():
          subprocess.run(['rm', '-rf', str(out)], check=True)
        settle(corpus)
        preps.append(measured(['-m', 'jaxlm.prepare', '--config=experiments/gpt_small.py',
                               *data_flags(corpus, tok, a.fmt), f'--out={out}'], env))
        speeds.append(encode_speed(corpus, out, a.fmt))
      runs = [measured(['-m', 'jaxlm.main', '--config=experiments/gpt_small.py', *TINY,
                        *data_flags(corpus, tok, a.fmt), f'--config.data.dataset_dir={out}',
                        f'--workdir={work}/run_{size_mb}_{tok}_{i}'], env,
                       first_line='train step      1/') for i in range(1 + a.repeats)]
      for i in range(1 + a.repeats):
        subprocess.run(['rm', '-rf', f'{work}/run_{size_mb}_{tok}_{i}'], check=True)
      row = dict(size_mb=round(mb), tokenizer=tok, file_format=a.fmt)
      if preps:
        prep = sorted(preps, key=lambda p: p['wall_s'])[len(preps) // 2]  # the median run
        speed = sorted(speeds)[len(speeds) // 2]
        row.update(prepare_s=prep['wall_s'], prepare_mb_s=mb / prep['wall_s'],
                   per_core=mb / prep['wall_s'] / cores, **phases(prep['lines']),
                   encode_mb_s=speed, goal=0.8 * speed * cores, prepare_rss_mb=prep['rss_mb'],
                   worker_rss_mb=prep['worker_rss_mb'])
      again = sorted(runs[1:], key=lambda r: r['first_s'])[(len(runs) - 1) // 2]  # median
      row.update(first_step_s=[runs[0]['first_s'], again['first_s']],
                 train_rss_mb=again['rss_mb'])
      rows.append(row)
      print(json.dumps(row), flush=True)
  if a.today:
    size_mb = int(a.sizes_mb.split(',')[0])
    corpus = work / f'corpus_{size_mb}mb{_SUFFIX[a.fmt]}'
    # the same text as plain files: today's reader
    text = work / f'corpus_{size_mb}mb{_SUFFIX[a.fmt]}_text'
    if not text.exists():
      text.mkdir()
      for f in sorted(corpus.glob(f'*.{_EXT[a.fmt]}')):
        with open(f) as src, open(text / f'{f.stem}.txt', 'w') as dst:
          for line in src:
            dst.write(_document(line, a.fmt) + '\n\n')
    tree = work / 'today'
    if not tree.exists():
      subprocess.run(['git', 'worktree', 'add', '--detach', str(tree), a.today], cwd=REPO,
                     check=True)
    for tok in a.tokenizers.split(','):
      flags = ['--config.data.source=files', f'--config.data.train_files={text}/*.txt',
               f'--config.data.tokenizer={tok}']
      if tok == 'sentencepiece':
        flags.append('--config.data.vocab_size=4096')
      r = measured(['-m', 'jaxlm.main', f'--config={tree}/experiments/gpt_small.py', *TINY, *flags,
                    f'--workdir={work}/run_today_{tok}'], dict(env, PYTHONPATH=str(tree)),
                   first_line='train step      1/')
      subprocess.run(['rm', '-rf', f'{work}/run_today_{tok}'], check=True)
      row = dict(size_mb=size_mb, tokenizer=tok, path=f'today ({a.today}, in memory)',
                 first_step_s=r['first_s'], train_rss_mb=r['rss_mb'])
      print(json.dumps(row), flush=True)


if __name__ == '__main__':
  main()
