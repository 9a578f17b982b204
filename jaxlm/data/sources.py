"""Where text comes from: a TFDS dataset or local UTF-8 text files.

Settings that cannot work raise ConfigError before the slow part (importing
TensorFlow, preparing a dataset, reading files) wherever they can be checked
that early. TensorFlow is imported only here and only for data.source=tfds.

Offline: tiny_shakespeare's download ships in the package (data/corpora/) and
is TFDS's manual_dir when data.manual_dir is empty; a dataset that must
download from a host that cannot be reached fails at once, not after
minutes of TFDS's retries.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import urllib.parse
from importlib import resources
from typing import Iterable, Iterator

from jaxlm.config import ConfigError, DataConfig, DataSource

EVAL_HOLDOUT = 0.1  # files source without eval_files: the last 10% of the bytes
BUNDLED = ('tiny_shakespeare',)  # TFDS datasets whose download is in data/corpora/<name>/
PROBE_TIMEOUT_S = 5  # per download host; at most PROBE_HOSTS of them are tried
PROBE_HOSTS = 4
OFFLINE_FIX = ('set data.manual_dir to a folder with its files, data.tfds_data_dir to'
               ' where it is prepared, or use data.source=files')


def documents(cfg: DataConfig, split: str) -> Iterator[str]:
  """The text documents of `split` (cfg.train_split or cfg.eval_split), in source order.

  tfds: the `cfg.text_key` feature of each example of that TFDS split.
  files: the documents of the files matching cfg.train_files (sorted) for the
  train split, or cfg.eval_files for the eval split, as cfg.file_format reads
  them (jaxlm/data/pieces.py); with eval_files='' the last 10% of the train
  files' bytes are held out as the eval split instead.
  """
  from jaxlm.data import pieces  # (pieces reads TFDS through this module)
  if cfg.source is DataSource.TFDS:
    return nonempty_documents(cfg, split, _tfds_documents(cfg, split))
  if split not in (cfg.train_split, cfg.eval_split):
    raise ValueError(f'split {split!r} is neither data.train_split nor data.eval_split')
  parts = pieces.source_parts(cfg, hashes=False, splits=(split,))
  return nonempty_documents(cfg, split, (doc for piece in pieces.split_pieces(cfg, split, parts)
                                         for doc in pieces.piece_documents(cfg, piece)))


def nonempty_documents(cfg: DataConfig, split: str, docs: Iterable[str]) -> Iterator[str]:
  """docs, then one line naming the setting if none of them held any text."""
  if cfg.source is DataSource.TFDS:
    problem = (f'{_split_setting(cfg, split)}={split!r} of {cfg.dataset} holds no text'
               f' in data.text_key={cfg.text_key!r}; choose another split or feature')
  else:
    problem = (f'the files hold no text for the {split!r} split; add text to'
               ' data.train_files, or set data.eval_files')
  empty = True
  for doc in docs:
    empty = empty and not doc
    yield doc
  if empty:
    raise ConfigError(problem)


def _split_setting(cfg: DataConfig, split: str) -> str:
  return 'data.train_split' if split == cfg.train_split else 'data.eval_split'


# --- TFDS --------------------------------------------------------------------


def import_tfds(instead: str = 'data.source=files'):
  """TFDS, imported on first use (GPU images may lack TensorFlow); `instead`: the fix."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  # TF only reads data here; its oneDNN notice would be a stray stderr line.
  os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
  try:
    import tensorflow as tf
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise ConfigError(f'data.source=tfds needs tensorflow and tensorflow-datasets ({e});'
                      f' install them, or use {instead}') from None
  try:
    tf.config.set_visible_devices([], 'GPU')  # TF only reads data; JAX owns GPUs
  except RuntimeError:
    pass  # TF's devices were already set up by an earlier call
  return tfds


def _check_manual_dir(cfg: DataConfig) -> None:
  if cfg.manual_dir and not (os.path.isdir(cfg.manual_dir) and os.listdir(cfg.manual_dir)):
    raise ConfigError(
        f'data.manual_dir={cfg.manual_dir} does not exist or is empty; point it at'
        ' the folder holding the downloaded files, or set it to \'\' to download')


def prepared_tfds_info(cfg: DataConfig) -> dict | None:
  """A prepared TFDS dataset's version and splits, read from its files without TensorFlow.

  {'version': '1.0.0', 'splits': {name: {'examples': N, 'bytes': B}}} from
  DATA_DIR/NAME/VERSION/dataset_info.json, which TFDS writes when it has
  prepared the dataset (into a temporary folder, renamed when complete).
  None wherever only TFDS can tell (a version or config in the name, several
  versions on disk, data.text_key not a feature): the caller asks TFDS then.
  Importing TensorFlow costs a run about 8 s and 600 MB before its first step.
  """
  _check_manual_dir(cfg)
  if not re.fullmatch(r'[\w-]+(/[\w-]+)?', cfg.dataset):
    return None
  root = (cfg.tfds_data_dir or os.environ.get('TFDS_DATA_DIR')
          or os.path.join(os.path.expanduser('~'), 'tensorflow_datasets'))
  folder = os.path.join(root, cfg.dataset)
  try:
    versions = [v for v in os.listdir(folder) if re.fullmatch(r'\d+\.\d+\.\d+', v)]
  except OSError:
    return None
  if len(versions) != 1:
    return None
  try:
    with open(os.path.join(folder, versions[0], 'dataset_info.json')) as f:
      info = json.load(f)
    with open(os.path.join(folder, versions[0], 'features.json')) as f:
      features = json.load(f)['featuresDict']['features']
    if cfg.text_key not in features or info['version'] != versions[0]:
      return None
    splits = {s['name']: {'examples': sum(int(n) for n in s['shardLengths']),
                          'bytes': int(s['numBytes'])} for s in info['splits']}
  except (OSError, ValueError, KeyError, TypeError):
    return None
  return {'version': versions[0], 'splits': splits}


def prepared_tfds_builder(cfg: DataConfig):
  """The prepared TFDS builder; checks every setting it can before preparing."""
  _check_manual_dir(cfg)
  builder = tfds_builder(cfg.dataset, cfg.tfds_data_dir, 'data.dataset')
  features = list(builder.info.features.keys())
  if cfg.text_key not in features:
    raise ConfigError(f'data.text_key={cfg.text_key!r} is not a feature of {cfg.dataset};'
                      f' it has: {", ".join(features)}')
  prepare_tfds(builder, cfg.manual_dir, OFFLINE_FIX)
  return builder


def tfds_builder(dataset: str, data_dir: str, setting: str, instead: str = 'data.source=files'):
  """The TFDS builder of `dataset`, not yet prepared; an unknown name names `setting`."""
  tfds = import_tfds(instead)
  try:
    return tfds.builder(dataset, data_dir=data_dir or None)
  except tfds.core.registered.DatasetNotFoundError:
    close = difflib.get_close_matches(dataset, tfds.list_builders(), n=3)
    hint = f'did you mean {" or ".join(close)}?' if close else 'see tfds.list_builders()'
    raise ConfigError(f'{setting}={dataset!r} is not a TFDS dataset; {hint}') from None


def prepare_tfds(builder, manual_dir: str, fix: str) -> None:
  """Prepares a builder from manual_dir, the copy jaxlm bundles, or a download that can start.

  `fix` is the offline alternative an error names.
  """
  tfds = import_tfds()
  dataset = builder.name
  if not manual_dir and not os.path.exists(builder.data_path):  # TFDS's test for "prepared"
    manual_dir = bundled_manual_dir(dataset)
    if manual_dir:
      _log(f'data: preparing TFDS {dataset} from the copy bundled with jaxlm'
           f' ({manual_dir}), not a download')
    else:
      check_download_hosts(builder, fix)
  try:
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir or None))
  except Exception as e:  # noqa: BLE001  (TFDS raises many kinds when it cannot prepare)
    raise ConfigError(
        f'could not prepare TFDS {dataset} ({str(e).splitlines()[0][:200]}); {fix}') from None


def bundled_manual_dir(dataset: str) -> str | None:
  """The folder in the installed package holding `dataset`'s download, if it ships one."""
  if dataset not in BUNDLED:
    return None
  folder = resources.files('jaxlm.data').joinpath('corpora', dataset)
  if not isinstance(folder, os.PathLike) or not os.path.isdir(folder):
    return None  # a zipped or stripped install: TFDS downloads as usual
  return os.fspath(folder)


def _log(message: str) -> None:
  import jax  # only for the process index
  if jax.process_index() == 0:
    print(message, flush=True)


def check_download_hosts(builder, fix: str) -> None:
  """ConfigError naming `fix` at once when a host the dataset downloads from is unreachable.

  TFDS retries a failed download about ten times with growing waits (minutes
  offline) and has no setting for it, so each host of the dataset's
  registered URLs (not yet in the downloads folder) gets one HEAD request
  first, through the same proxies TFDS would use.
  """
  downloads = os.path.join(os.fspath(builder.data_dir_root), 'downloads')
  hosts = {}
  for url, info in (builder.url_infos or {}).items():
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ('http', 'https') and not _downloaded(downloads, url, info):
      hosts.setdefault(parts.netloc, url)
  for host, url in list(hosts.items())[:PROBE_HOSTS]:
    problem = _unreachable(url)
    if problem:
      raise ConfigError(
          f'TFDS {builder.name} must download from {host}, which cannot be reached'
          f' ({problem}); offline, {fix}')


def _downloaded(downloads: str, url: str, info) -> bool:
  from tensorflow_datasets.core.download import resource
  path = os.path.join(downloads, resource.get_dl_fname(url, info.checksum))
  return os.path.exists(path) and os.path.exists(f'{path}.INFO')


def _unreachable(url: str) -> str | None:
  """Why `url`'s server gives no answer in PROBE_TIMEOUT_S, or None if it answers."""
  import requests
  try:
    requests.head(url, timeout=PROBE_TIMEOUT_S, allow_redirects=False).close()
  except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
    return type(e).__name__
  return None


def _tfds_documents(cfg: DataConfig, split: str) -> Iterator[str]:
  import_tfds()
  builder = prepared_tfds_builder(cfg)
  # Split names are known only once prepared; 'train[:10%]+test' style is fine.
  names = list(builder.info.splits.keys())
  bases = [part.split('[')[0].strip() for part in split.split('+')]
  if any(base not in names for base in bases):
    raise ConfigError(f'{_split_setting(cfg, split)}={split!r} is not a split of'
                      f' {cfg.dataset}; it has: {", ".join(names)}')
  return tfds_documents(cfg, split, builder)


def tfds_documents(cfg: DataConfig, split: str, builder=None) -> Iterator[str]:
  """The text of each example of a TFDS split or slice ('train[0%:25%]'), streamed."""
  tfds = import_tfds()
  builder = builder or prepared_tfds_builder(cfg)
  dataset = tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))
  return _decoded(cfg, split, dataset, builder.data_dir)


def _decoded(cfg: DataConfig, split: str, dataset, data_dir: str) -> Iterator[str]:
  """The text of each example; corrupt records and non-UTF-8 text in one line."""
  import tensorflow as tf
  try:
    for example in dataset:
      yield example[cfg.text_key].decode('utf-8')
  except tf.errors.OpError as e:
    raise ConfigError(
        f'the prepared TFDS {cfg.dataset} ({split}) in {data_dir} is corrupt'
        f' ({type(e).__name__}); delete that folder and run again to prepare it anew'
        ) from None
  except UnicodeDecodeError as e:
    raise ConfigError(
        f'TFDS {cfg.dataset} ({split}) feature {cfg.text_key!r} is not UTF-8 text'
        f' (byte {e.start}: {e.object[e.start:e.start + 1]!r}); pick a text feature'
        ' with data.text_key') from None
