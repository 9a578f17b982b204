"""Prepare once, read by offset: a source split tokenized into a dataset folder.

  prepare(cfg, out)      tokenizes cfg's train and eval splits into `out`
                         (jaxlm/data/dataset.py names its files), piece by
                         piece, on `workers` processes (threads for the byte
                         tokenizer's vectorized pieces); rerun, it skips the
                         pieces already complete and gives the same bytes
  prepared(cfg)          what a training run reads: data.dataset_dir, checked
                         against cfg, or a folder under data.cache_dir keyed
                         by the source's fingerprint, prepared first if absent

Beyond one machine: `num_shards` processes (a SLURM array, a Kubernetes job,
a pod's hosts) each given its `shard_index` take every num_shards-th piece,
writing to the same folder (a shared file system or gs://). Shard 0 builds
the tokenizer (the others wait for it); whichever process finds every piece
complete writes the manifest.

Memory: a worker holds one batch of documents and their tokens (a few MB),
whatever the corpus size; a document is read whole, so one longer than a
shard (`shard_tokens`) is refused.
"""

from __future__ import annotations

import concurrent.futures
import errno
import hashlib
import multiprocessing
import os
import shutil
import time
import uuid

import numpy as np
from etils import epath

from jaxlm import rundir
from jaxlm.config import ConfigError, DataConfig, TokenizerKind, validate_tokenizer_sample
from jaxlm.data import byte_pieces
from jaxlm.data import dataset as dataset_lib
from jaxlm.data import pieces as pieces_lib
from jaxlm.data import sources
from jaxlm.data import tokenizer_files
from jaxlm.data import tokenizers

SHARD_TOKENS = 1 << 27  # tokens a shard file holds at most (256 MiB of uint16)
BATCH_BYTES = 256 << 10  # text encoded in one batched call (bpe: 4 MB ones are 15% slower)
WAIT_S = 2.0  # how often a waiting process looks for the tokenizer
POOL_MIN_BYTES = 32 << 20  # less input than this is tokenized in the calling process


# --- What the tokens depend on -----------------------------------------------


def tokenizer_parts(cfg: DataConfig, given: tokenizers.Tokenizer | None) -> dict:
  """The tokenizer's part of the fingerprint: its settings, or a given one's hash."""
  if given is not None:
    return {'kind': given.kind.value, 'sha256': given.digest()}
  parts = _tokenizer_settings(cfg)
  if cfg.tokenizer_file:  # read as the tokenizer reads it: a missing file is one line
    what = ('a tiktoken ranks file' if cfg.tokenizer is TokenizerKind.TIKTOKEN
            else 'a Hugging Face tokenizer.json')
    raw = tokenizer_files.read_setting_file(f'data.tokenizer_file={cfg.tokenizer_file}',
                                            cfg.tokenizer_file, what)
    parts['file_blake2b'] = hashlib.blake2b(raw, digest_size=16).hexdigest()
  return parts


def fingerprint_parts(cfg: DataConfig, given: tokenizers.Tokenizer | None = None) -> dict:
  """The format, source and tokenizer parts the fingerprint hashes."""
  return {'format': dataset_lib.FORMAT_VERSION, 'source': pieces_lib.source_parts(cfg),
          'tokenizer': tokenizer_parts(cfg, given)}


# --- Preparing -----------------------------------------------------------------


def prepare(cfg: DataConfig, out: str, *, tokenizer: tokenizers.Tokenizer | None = None,
            workers: int = 0, num_shards: int = 1, shard_index: int = 0,
            shard_tokens: int = SHARD_TOKENS, log=print) -> dict:
  """Tokenizes cfg's splits into `out` (this shard's pieces); the manifest once all are done.

  tokenizer: use this one (a resumed or imported run's) instead of building
  one from cfg. workers: processes (0: one per CPU core, or just this one for
  less than POOL_MIN_BYTES of input). Returns the manifest,
  or {} when other shards' pieces are still missing.
  """
  if not 0 <= shard_index < num_shards:
    raise ConfigError(f'--shard_index={shard_index} must be in [0, --num_shards={num_shards})')
  if shard_tokens <= 0:
    raise ConfigError(f'--shard_tokens={shard_tokens} must be positive')
  root = epath.Path(out)
  parts = fingerprint_parts(cfg, tokenizer)
  fp = dataset_lib.fingerprint(parts)
  manifest = dataset_lib.read_json(dataset_lib.manifest_file(root))
  if manifest is not None:
    _check_same(root, manifest, parts)
    log(f'prepare: {out} is complete (fingerprint {fp}); nothing to do')
    return manifest
  splits = {split: pieces_lib.split_pieces(cfg, split, parts['source'])
            for split in dict.fromkeys((cfg.train_split, cfg.eval_split))}
  plan = {'format': dataset_lib.FORMAT_VERSION, 'fingerprint': fp, 'parts': parts,
          'pieces': {s: [p.describe() for p in ps] for s, ps in splits.items()}}
  old = dataset_lib.read_json(dataset_lib.plan_file(root))
  if old is not None:
    _check_same(root, old, parts)
    tok = _tokenizer(cfg, root, tokenizer, shard_index, splits[cfg.train_split], log)
  else:
    _check_folder(root)
    # Built before the folder is made: unreadable text leaves nothing behind.
    tok = tokenizer or (_build_tokenizer(cfg, splits[cfg.train_split], log)
                        if not shard_index else None)
    _make_folder(root)
    dataset_lib.write_json(dataset_lib.plan_file(root), plan)
    if tok is not None and not rundir.has_tokenizer(root):
      tok.save(root)
    tok = _tokenizer(cfg, root, tok, shard_index, splits[cfg.train_split], log)
  dtype = dataset_lib.token_dtype(tok.vocab_size)
  every = [p for ps in splits.values() for p in ps]
  mine = [p for i, p in enumerate(every) if i % num_shards == shard_index]
  todo = [p for p in mine if _done(root, p) is None]
  if len(todo) < len(mine):
    log(f'prepare: {len(mine) - len(todo)} of {len(mine)} pieces already complete')
  _run(cfg, root, todo, dtype, shard_tokens, workers, log,
       threads=byte_pieces.applies(cfg, tok.kind))
  records = {s: [_done(root, p) for p in ps] for s, ps in splits.items()}
  missing = sum(r is None for rs in records.values() for r in rs)
  if missing:
    log(f'prepare: this shard is complete; {missing} pieces of other shards are not yet')
    return {}
  return _write_manifest(cfg, root, fp, parts, tok, dtype, records)


def _check_same(root, recorded: dict, parts: dict) -> None:
  if recorded.get('format') != dataset_lib.FORMAT_VERSION:
    raise ConfigError(f'--out={root} holds a dataset of format {recorded.get("format")}; this'
                      f' jaxlm writes format {dataset_lib.FORMAT_VERSION}: use a new --out')
  change = dataset_lib.what_changed(recorded.get('parts'), parts)
  if change:
    raise ConfigError(f'--out={root} holds a dataset prepared from other input ({change});'
                      ' use a new --out, or delete that folder to prepare it anew')


def _check_folder(root: epath.Path) -> None:
  if root.exists() and not root.is_dir():
    raise ConfigError(f'--out={root} is a file; pass a folder for the dataset')
  if root.exists() and any(root.iterdir()):
    raise ConfigError(f'--out={root} holds other files; pass a new or empty folder (nothing'
                      ' in it is touched)')


def _make_folder(root: epath.Path) -> None:
  try:
    _check_folder(root)
    root.mkdir(parents=True, exist_ok=True)
  except (PermissionError, NotADirectoryError, FileExistsError) as e:
    raise ConfigError(f'--out={root} cannot be created ({type(e).__name__}: {e.strerror});'
                      ' pick a folder you can write') from None


def _tokenizer(cfg: DataConfig, root, given, shard_index: int, train_pieces,
               log) -> tokenizers.Tokenizer:
  """The dataset's tokenizer: the one in `root`, or built (shard 0) and saved there."""
  if rundir.has_tokenizer(root):
    return tokenizers.load_tokenizer(root)
  if given is not None:
    given.save(root)
    return given
  if shard_index:
    log(f'prepare: waiting for shard 0 to write the tokenizer to {root}')
    while not rundir.has_tokenizer(root):
      time.sleep(WAIT_S)
    return tokenizers.load_tokenizer(root)
  tok = _build_tokenizer(cfg, train_pieces, log)
  tok.save(root)
  return tok


def _build_tokenizer(cfg: DataConfig, train_pieces: list[pieces_lib.Piece],
                     log) -> tokenizers.Tokenizer:
  start = time.time()
  sampled = 0

  def documents():
    nonlocal sampled
    if cfg.tokenizer not in TRAINED_ON_A_SAMPLE:
      yield from sources.documents(cfg, cfg.train_split)
      return
    for doc in sources.nonempty_documents(
        cfg, cfg.train_split,
        pieces_lib.sample_documents(cfg, train_pieces, sample_bytes(cfg))):
      sampled += len(doc.encode('utf-8'))
      yield doc

  tok = tokenizers.new_tokenizer(cfg, documents)
  if tok.kind is not TokenizerKind.BYTE:
    total = sum(max(p.num_bytes, 0) for p in train_pieces)
    sample = f' from {sampled / 1e6:.2f} MB of the {total / 1e6:.2f} MB' if sampled else ''
    log(f'prepare: built the {tok.kind.value} tokenizer ({tok.vocab_size} ids){sample} in'
        f' {time.time() - start:.1f}s')
  return tok


# Trained tokenizers learn from a sample: `tokenizers`' BPE trainer reads about 7 MB/s on
# 2 cores, little faster than encoding, so training on a 2 GB corpus would cost about as
# much as tokenizing it. SentencePiece's trainer keeps at most 1M sentences in any case.
TRAINED_ON_A_SAMPLE = (TokenizerKind.SENTENCEPIECE, TokenizerKind.BPE)
SAMPLE_BYTES_PER_TOKEN = 4096  # the default sample: 16 MB for 4096 ids, 196 MB for 50257
MIN_SAMPLE_BYTES = 16 << 20


def sample_bytes(cfg: DataConfig) -> int:
  """How much training text a trained tokenizer learns from (data.tokenizer_sample_mb)."""
  validate_tokenizer_sample(cfg.tokenizer_sample_mb)
  if cfg.tokenizer_sample_mb:
    return cfg.tokenizer_sample_mb << 20
  return max(MIN_SAMPLE_BYTES, SAMPLE_BYTES_PER_TOKEN * cfg.vocab_size)


def _done(root, piece: pieces_lib.Piece) -> dict | None:
  record = dataset_lib.read_json(dataset_lib.done_file(root, piece.split, piece.index))
  return record if record is not None and record.get('piece') == piece.describe() else None


def _run(cfg, root, todo, dtype, shard_tokens, workers, log, threads: bool = False) -> None:
  """Prepares the pieces in `todo`: in this process, on its threads, or on a pool of processes.

  threads: the pieces' work releases the GIL (byte_pieces: pyarrow, numpy and
  file I/O), so threads keep every core busy without starting processes (a
  piece that gives way to the line-by-line path then runs on one core's worth).
  """
  if not todo:
    return
  total = sum(max(p.num_bytes, 0) for p in todo)
  if not workers:  # one per core, unless the input is too small to repay starting them
    workers = (os.cpu_count() or 1) if total >= POOL_MIN_BYTES or threads else 1
  workers = min(workers, len(todo))
  progress = _Progress(len(todo), total, log)
  args = [(cfg, os.fspath(root), p, dtype.str, shard_tokens) for p in todo]
  if workers == 1:
    for a in args:
      progress.add(_prepare_piece(*a))
    return
  context = multiprocessing.get_context('spawn')  # no fork of threads (TF, tokenizers)
  executor = (concurrent.futures.ThreadPoolExecutor(workers) if threads else
              concurrent.futures.ProcessPoolExecutor(workers, mp_context=context,
                                                     initializer=_worker_init))
  with executor as pool:
    futures = [pool.submit(_prepare_piece, *a) for a in args]
    try:
      for future in concurrent.futures.as_completed(futures):
        progress.add(future.result())
    except BaseException:
      for f in futures:
        f.cancel()
      raise


def _worker_init() -> None:
  os.environ['RAYON_NUM_THREADS'] = '1'  # one process a core: no threads on top
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


class _Progress:
  """prepare: 3/12 pieces, 41,002 documents, 130.2 MB, 12.4 MB/s, ETA 0m21s"""

  def __init__(self, pieces: int, total_bytes: int, log):
    self.pieces, self.total, self.log = pieces, total_bytes, log
    self.done = self.docs = self.bytes = 0
    self.start = self.last = time.time()

  def add(self, record: dict) -> None:
    self.done += 1
    self.docs += record['documents']
    self.bytes += record['piece']['end'] - record['piece']['start']
    now = time.time()
    if now - self.last < 2 and self.done < self.pieces:
      return
    self.last = now
    rate = self.bytes / max(now - self.start, 1e-9)
    eta = (self.total - self.bytes) / rate if rate and self.total else 0
    mb = f', {self.bytes / 1e6:.1f} MB, {rate / 1e6:.1f} MB/s' if self.total else ''
    self.log(f'prepare: {self.done}/{self.pieces} pieces, {self.docs:,} documents{mb},'
             f' ETA {int(eta) // 60}m{int(eta) % 60:02d}s')


# --- One piece -------------------------------------------------------------------


def _prepare_piece(cfg: DataConfig, out: str, piece: pieces_lib.Piece, dtype: str,
                   shard_tokens: int) -> dict:
  """Writes the piece's shards and index files, then its done record (which it returns)."""
  root = epath.Path(out)
  tok = tokenizers.load_tokenizer(root)
  sep = (np.array([tok.eos_id], np.int64) if tok.eos_id is not None
         else tok.encode('\n').astype(np.int64))
  writer = _ShardWriter(root, piece, np.dtype(dtype), shard_tokens)
  try:
    blocks = (byte_pieces.tokens(cfg, piece) if byte_pieces.applies(cfg, tok.kind)
              and sep.tolist() == [byte_pieces.NEWLINE] else None)
    if blocks is not None:
      for flat, lengths in blocks:
        writer.add_flat(flat, lengths)
    else:
      batch, size = [], 0
      for doc in pieces_lib.piece_documents(cfg, piece):
        batch.append(doc)
        size += len(doc)
        if size >= BATCH_BYTES:
          writer.add(tok.encode_batch(batch), sep)
          batch, size = [], 0
      if batch:
        writer.add(tok.encode_batch(batch), sep)
    shards = writer.close()
  except OSError as e:
    writer.abandon()
    if e.errno == errno.ENOSPC:
      raise ConfigError(f'the disk holding {out} is full (writing {piece.split} piece'
                        f' {piece.index}); free space and run again: complete pieces are'
                        ' kept') from None
    raise
  record = {'piece': piece.describe(), 'shards': shards,
            'documents': sum(s['documents'] for s in shards),
            'tokens': sum(s['tokens'] for s in shards)}
  dataset_lib.write_json(dataset_lib.done_file(root, piece.split, piece.index), record)
  return record


class _ShardWriter:
  """A piece's shards: each written to a temporary name, renamed when closed."""

  def __init__(self, root, piece, dtype: np.dtype, shard_tokens: int):
    self.root, self.piece, self.dtype, self.limit = root, piece, dtype, shard_tokens
    self.shards: list[dict] = []
    self._tmp = f'.tmp-{uuid.uuid4().hex[:8]}'
    (epath.Path(root) / piece.split).mkdir(parents=True, exist_ok=True)
    self._open()

  def _names(self):
    k = len(self.shards)
    return (dataset_lib.shard_file(self.root, self.piece.split, self.piece.index, k),
            dataset_lib.index_file(self.root, self.piece.split, self.piece.index, k))

  def _open(self) -> None:
    bin_file, _ = self._names()
    self._file = epath.Path(f'{bin_file}{self._tmp}').open('wb')
    # A local file takes the array's memory as it is; an object store's writer may want bytes.
    self._view = memoryview if rundir.is_local(bin_file) else np.ndarray.tobytes
    self._ends: list[np.ndarray] = []  # each document's end, in blocks
    self._tokens = 0

  def add(self, encoded: list[np.ndarray], sep: np.ndarray) -> None:
    """Appends documents (each then `sep`)."""
    if encoded:
      lengths = np.fromiter((len(ids) for ids in encoded), np.int64, len(encoded)) + len(sep)
      self.add_flat(np.concatenate([x for ids in encoded for x in (ids, sep)]), lengths)

  def add_flat(self, flat: np.ndarray, lengths: np.ndarray) -> None:
    """Appends documents given end to end (their lengths summing to len(flat)),
    as many a write as the shard has room for."""
    if lengths.size and lengths.max() > self.limit:
      where = (f'{self.piece.path} (bytes {self.piece.start}..{self.piece.end})'
               if self.piece.end else self.piece.path)
      raise ConfigError(f'a document of {where} has {lengths.max():,} tokens, more than a'
                        f' shard holds (--shard_tokens={self.limit:,}); raise --shard_tokens'
                        ' or split the document (data.file_format=lines)')
    i, at = 0, 0  # documents and tokens of `flat` written
    while i < len(lengths):
      ends = np.cumsum(lengths[i:])
      k = int(np.searchsorted(ends, self.limit - self._tokens, side='right'))
      if k == 0:  # the next document starts a new shard
        self._close_shard()
        self._open()
        continue
      n = int(ends[k - 1])
      self._file.write(self._view(flat[at:at + n].astype(self.dtype, copy=False)))
      self._ends.append(self._tokens + ends[:k])
      self._tokens += n
      i, at = i + k, at + n

  def _close_shard(self) -> None:
    self._file.close()
    bin_file, idx_file = self._names()
    ends = np.concatenate(self._ends) if self._ends else np.zeros(0, np.int64)
    rundir.write_bytes(idx_file, ends.astype('<i8').tobytes())
    # replace: a run killed after this, before the piece's record, left the same file
    epath.Path(f'{bin_file}{self._tmp}').replace(bin_file)
    self.shards.append({'file': f'{self.piece.split}/{bin_file.name}',
                        'index': f'{self.piece.split}/{idx_file.name}',
                        'tokens': self._tokens, 'documents': len(ends)})

  def close(self) -> list[dict]:
    self._close_shard()
    return self.shards

  def abandon(self) -> None:
    self._file.close()
    bin_file, _ = self._names()
    epath.Path(f'{bin_file}{self._tmp}').unlink(missing_ok=True)


def _write_manifest(cfg, root, fp, parts, tok, dtype, records) -> dict:
  splits = {}
  for split, rs in records.items():
    shards = [s for r in rs for s in r['shards'] if s['tokens']]
    splits[split] = {'shards': shards, 'documents': sum(r['documents'] for r in rs),
                     'tokens': sum(r['tokens'] for r in rs)}
  if not splits[cfg.train_split]['documents']:
    raise ConfigError(f'the {cfg.train_split!r} split holds no text; point data.train_files'
                      ' (or data.dataset) at text')
  sep = 1 if tok.eos_id is not None else len(tok.encode('\n'))
  manifest = {'format': dataset_lib.FORMAT_VERSION, 'fingerprint': fp, 'parts': parts,
              'dtype': dtype.str, 'vocab_size': tok.vocab_size, 'eos_id': tok.eos_id,
              'separator_tokens': sep, 'train_split': cfg.train_split,
              'eval_split': cfg.eval_split, 'splits': splits}
  dataset_lib.write_json(dataset_lib.manifest_file(root), manifest)
  return manifest


# --- What a training run reads ------------------------------------------------


def default_cache_dir() -> str:
  return os.environ.get('JAXLM_DATASET_CACHE') or os.path.join('~', '.cache', 'jaxlm',
                                                               'datasets')


def prepared(cfg: DataConfig, tokenizer: tokenizers.Tokenizer | None = None, log=print
             ) -> str:
  """The dataset folder a run reads (complete, matching cfg), prepared first if needed.

  data.dataset_dir: checked against cfg's source and tokenizer settings
  (without re-reading the source: its start-up does not grow with the corpus);
  else the folder data.cache_dir/FINGERPRINT, where the same input always lands.
  tokenizer: the run's own (resuming, or an import's): the dataset must have
  been tokenized with exactly it.
  """
  if cfg.dataset_dir:
    check_matches(cfg, dataset_lib.read_manifest(cfg.dataset_dir), tokenizer)
    return cfg.dataset_dir
  cache = epath.Path(os.path.expanduser(cfg.cache_dir or default_cache_dir()))
  source = pieces_lib.source_parts(cfg)
  # The folder a fresh run prepares (its tokenizer built from the settings),
  # which a resumed run reuses when it holds the run's tokenizer; else one of
  # the run's own tokenizer.
  candidates = [] if _needs_given(cfg) else [tokenizer_parts(cfg, None)]
  if tokenizer is not None:
    candidates.append(tokenizer_parts(cfg, tokenizer))
  for tok_parts in candidates:
    parts = {'format': dataset_lib.FORMAT_VERSION, 'source': source, 'tokenizer': tok_parts}
    fp = dataset_lib.fingerprint(parts)
    folder = cache / fp
    if (dataset_lib.read_json(dataset_lib.manifest_file(folder)) is not None
        and (tokenizer is None or _same_tokenizer(folder, tokenizer))):
      log(f'data: {folder} is prepared (fingerprint {fp}): no tokenizing')
      return os.fspath(folder)
  partial = cache / f'{fp}.partial-{uuid.uuid4().hex[:8]}'
  log(f'data: preparing {folder} (fingerprint {fp}) once; later runs on the same input'
      ' read it')
  try:
    prepare(cfg, os.fspath(partial), tokenizer=tokenizer, log=log)
    try:
      partial.rename(folder)
    except OSError:  # another process prepared it meanwhile: the same bytes
      pass
  finally:
    if partial.exists():
      shutil.rmtree(partial, ignore_errors=True)
  return os.fspath(folder)


def _needs_given(cfg: DataConfig) -> bool:
  """Whether cfg alone cannot build the tokenizer (an import's Hugging Face one)."""
  return cfg.tokenizer is TokenizerKind.HUGGINGFACE and not cfg.tokenizer_file


def _same_tokenizer(folder, tokenizer: tokenizers.Tokenizer) -> bool:
  return tokenizers.load_tokenizer(folder).digest() == tokenizer.digest()


def check_matches(cfg: DataConfig, manifest: dict, tokenizer=None) -> None:
  """One line naming what differs between a dataset folder and the run's data settings."""
  recorded = manifest['parts']
  mine = {'source': _settings_of(cfg, recorded['source'])}
  theirs = {'source': _settings_of(None, recorded['source'])}
  if tokenizer is None:
    mine['tokenizer'] = _tokenizer_settings(cfg)
    theirs['tokenizer'] = {k: v for k, v in recorded['tokenizer'].items()
                           if k in mine['tokenizer']}
  change = dataset_lib.what_changed(theirs, mine)
  if change:
    raise ConfigError(f'data.dataset_dir={cfg.dataset_dir} does not match this run: {change};'
                      ' prepare a dataset for these settings, or set them as it was'
                      ' prepared')
  if tokenizer is not None and not _same_tokenizer(cfg.dataset_dir, tokenizer):
    raise ConfigError(f'data.dataset_dir={cfg.dataset_dir} was tokenized with another'
                      ' tokenizer than this run\'s (its checkpoint\'s vocabulary); prepare it'
                      ' with the run\'s tokenizer, or train in a new --workdir')
  for split in (cfg.train_split, cfg.eval_split):
    if split not in manifest['splits']:
      raise ConfigError(f'data.dataset_dir={cfg.dataset_dir} holds the splits'
                        f' {", ".join(sorted(manifest["splits"]))}, not {split!r}; set'
                        ' data.train_split and data.eval_split to its splits')


def _tokenizer_settings(cfg: DataConfig) -> dict:
  parts = {'kind': cfg.tokenizer.value}
  if cfg.tokenizer in TRAINED_ON_A_SAMPLE:
    parts['vocab_size'] = cfg.vocab_size
    if cfg.tokenizer_sample_mb:  # (absent at the default: older fingerprints still hold)
      parts['sample_mb'] = cfg.tokenizer_sample_mb
  return parts


def _settings_of(cfg: DataConfig | None, recorded: dict) -> dict:
  """The source settings a run states (cfg) or a dataset recorded (cfg None), comparable.

  The files or TFDS version the dataset was prepared from are not compared:
  the dataset folder is what the run reads.
  """
  if cfg is None:
    if recorded['source'] == 'tfds':
      return {'data.source': 'tfds', 'data.dataset': recorded['dataset'],
              'data.text_key': recorded['text_key']}
    return {'data.source': 'files', 'data.file_format': recorded['file_format']}
  if cfg.source.value == 'tfds':
    return {'data.source': 'tfds', 'data.dataset': cfg.dataset, 'data.text_key': cfg.text_key}
  return {'data.source': 'files', 'data.file_format': cfg.file_format.value}
