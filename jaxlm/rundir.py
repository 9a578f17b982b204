"""A run folder's layout: the one module that names its files and reads and writes the small ones.

  RUN/config.json              the run's settings (jaxlm.config.to_dict), written at each start
  RUN/tokenizer.json           the tokenizer's spec; RUN/tokenizer.model: a SentencePiece model,
                               a Hugging Face tokenizer.json (an import's, data.tokenizer_file's
                               or a trained bpe's) or a tiktoken ranks file
  RUN/metrics.jsonl            one JSON row per logged train or eval step
  RUN/tensorboard/             TensorBoard event files
  RUN/checkpoints/STEP/        Orbax checkpoints (jaxlm/training/checkpoint.py)
  RUN/checkpoints_set_aside/   unfinished or unreadable checkpoints, moved out of the way
  RUN/sample.txt               the end-of-run sample
  RUN/profile/                 jax.profiler traces
  RUN/hf_source.json           an import's Hugging Face config.json, which export builds on
  RUN/tokens_SPLIT.npy         token caches of older jaxlm versions: never read, safe to delete

A run folder is a local path or a URI that etils.epath opens (gs://, s3://, ...):
every path here is an `epath.Path`, and every file goes through it, so a
gs:// run folder works for these files as Orbax makes it work for checkpoints.
No jax import: the plotter and the package root stay quick.
"""

from __future__ import annotations

import json
import os
from typing import IO, Callable

from etils import epath

from jaxlm.config import ConfigError

CONFIG_FILE = 'config.json'
TOKENIZER_FILE = 'tokenizer.json'
TOKENIZER_MODEL_FILE = 'tokenizer.model'
MODEL_FILE_KINDS = ('sentencepiece', 'huggingface', 'bpe', 'tiktoken')  # with tokenizer.model
METRICS_FILE = 'metrics.jsonl'
TENSORBOARD_DIR = 'tensorboard'
CHECKPOINTS_DIR = 'checkpoints'
SET_ASIDE_DIR = 'checkpoints_set_aside'
SAMPLE_FILE = 'sample.txt'
PROFILE_DIR = 'profile'
HF_SOURCE_FILE = 'hf_source.json'


# --- Paths -------------------------------------------------------------------


def is_local(workdir) -> bool:
  """Whether the run folder is a local path rather than a URI such as gs://bucket/run."""
  return '://' not in os.fspath(workdir)


def path(workdir) -> epath.Path:
  """The run folder as given (a relative local path stays relative)."""
  return epath.Path(workdir)


def absolute(workdir) -> epath.Path:
  """The run folder with local paths made absolute (Orbax needs absolute paths)."""
  return epath.Path(os.path.abspath(workdir)) if is_local(workdir) else epath.Path(workdir)


def config_file(workdir) -> epath.Path:
  return path(workdir) / CONFIG_FILE


def tokenizer_file(workdir) -> epath.Path:
  return path(workdir) / TOKENIZER_FILE


def tokenizer_model_file(workdir) -> epath.Path:
  return path(workdir) / TOKENIZER_MODEL_FILE


def metrics_file(workdir) -> epath.Path:
  return path(workdir) / METRICS_FILE


def tensorboard_dir(workdir) -> epath.Path:
  return path(workdir) / TENSORBOARD_DIR


def checkpoints_dir(workdir) -> epath.Path:
  """Absolute: what Orbax's CheckpointManager takes."""
  return absolute(workdir) / CHECKPOINTS_DIR


def set_aside_dir(workdir) -> epath.Path:
  return absolute(workdir) / SET_ASIDE_DIR


def sample_file(workdir) -> epath.Path:
  return path(workdir) / SAMPLE_FILE


def profile_dir(workdir) -> epath.Path:
  return path(workdir) / PROFILE_DIR


def exists(workdir) -> bool:
  """Whether the run folder exists as a folder."""
  return path(workdir).is_dir()


def make(workdir) -> epath.Path:
  """Creates the run folder (and its parents) if missing."""
  p = path(workdir)
  p.mkdir(parents=True, exist_ok=True)
  return p


def checkpoint_steps(workdir) -> list[int]:
  """The steps of finished checkpoints (folders named by a number), ascending."""
  directory = checkpoints_dir(workdir)
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def has_checkpoints(workdir) -> bool:
  return bool(checkpoint_steps(workdir))


# --- Small files ---------------------------------------------------------------


def write_bytes(file: epath.Path, data: bytes) -> None:
  """Writes a whole file so that a reader never sees part of it.

  Locally through a temporary file and a rename; an object store (gs://)
  makes an object visible only once its upload is complete.
  """
  file = epath.Path(file)
  if not is_local(file):
    file.write_bytes(data)
    return
  tmp = file.parent / f'{file.name}.tmp{os.getpid()}'
  tmp.write_bytes(data)
  os.replace(tmp, file)


def write_config_dict(workdir, config: dict) -> None:
  """config.json: the run's settings as jaxlm.config.to_dict gives them."""
  make(workdir)
  write_bytes(config_file(workdir), json.dumps(config, indent=2).encode('utf-8'))


def read_config_dict(workdir) -> dict:
  """config.json as a dict; one-line ConfigErrors for a missing folder or file."""
  if not exists(workdir):
    raise ConfigError(f'--workdir={workdir} does not exist; pass the folder of a training'
                      ' run (python -m jaxlm.main --workdir=...)')
  file = config_file(workdir)
  if not file.exists():
    raise ConfigError(f'--workdir={workdir} holds no {CONFIG_FILE}; pass the run folder of a'
                      ' jaxlm training run')
  try:
    raw = json.loads(file.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ConfigError(f'{file} is not JSON ({e}); restore it from a copy or pass another'
                      ' run folder') from None
  if not isinstance(raw, dict):
    raise ConfigError(f'{file} is not a jaxlm run config (not a JSON object); pass the run'
                      ' folder of a jaxlm training run')
  return raw


def has_tokenizer(workdir) -> bool:
  return tokenizer_file(workdir).exists()


def write_tokenizer(workdir, spec: dict, model: bytes | None = None) -> None:
  """tokenizer.json (and tokenizer.model); the spec last: its presence means complete."""
  make(workdir)
  if model is not None:
    write_bytes(tokenizer_model_file(workdir), model)
  write_bytes(tokenizer_file(workdir), json.dumps(spec).encode('utf-8'))


def read_tokenizer(workdir) -> tuple[dict, bytes | None]:
  """The tokenizer spec and, where the spec names one, the model file's bytes."""
  file = tokenizer_file(workdir)
  if not file.exists():
    raise ConfigError(f'--workdir={workdir} holds no {TOKENIZER_FILE}; pass the run folder'
                      ' of a jaxlm training run')
  spec = json.loads(file.read_text())
  model_file = tokenizer_model_file(workdir)
  if spec.get('kind') not in MODEL_FILE_KINDS:
    return spec, None
  if not model_file.exists():
    raise ConfigError(f'--workdir={workdir} holds {TOKENIZER_FILE} of a {spec["kind"]}'
                      f' tokenizer but no {TOKENIZER_MODEL_FILE}; restore it or pass another'
                      ' run folder')
  return spec, model_file.read_bytes()


def write_hf_source(workdir, hf_config: dict) -> None:
  """Keeps the Hugging Face config.json an import read."""
  write_bytes(path(workdir) / HF_SOURCE_FILE, json.dumps(hf_config, indent=2).encode())


def read_hf_source(workdir) -> dict | None:
  """The Hugging Face config.json the run was imported from; None if it was not."""
  file = path(workdir) / HF_SOURCE_FILE
  if not file.exists():
    return None
  try:
    return json.loads(file.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ConfigError(f'{file} is not valid JSON ({e}); delete it to export without the'
                      ' imported settings') from None


def write_sample(workdir, text: str) -> None:
  """sample.txt: the end-of-run sample, ending with a newline."""
  make(workdir)
  write_bytes(sample_file(workdir), (text + '\n').encode('utf-8'))


def read_sample(workdir) -> str:
  return sample_file(workdir).read_text()


# --- metrics.jsonl ---------------------------------------------------------------


def _ends_with_newline(file: epath.Path) -> bool:
  with file.open('rb') as f:
    f.seek(0, os.SEEK_END)
    size = f.tell()
    if not size:
      return True
    f.seek(size - 1)
    return f.read(1) == b'\n'


def open_metrics(workdir) -> IO[str]:
  """metrics.jsonl opened to append rows; a row cut short by a crash is ended first."""
  file = metrics_file(workdir)
  cut = file.exists() and not _ends_with_newline(file)
  f = file.open('a')
  if cut:
    f.write('\n')  # the cut row stays on a line of its own
  return f


def read_metric_rows(workdir, on_skip: Callable[[int, str], None] | None = None) -> list[dict]:
  """The rows of metrics.jsonl in file order: JSON objects with an integer "step".

  A line that is not one (a row cut short by a crash) is skipped, and
  on_skip(line number, why) told. After a resume a step may repeat: readers
  keep the last row of each step. FileNotFoundError if there is no file.
  """
  file = metrics_file(workdir)
  rows = []
  with file.open('rb') as f:
    text = f.read().decode('utf-8', 'replace')
  for number, line in enumerate(text.split('\n'), start=1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError:
      if on_skip:
        on_skip(number, 'is not JSON')
      continue
    step = row.get('step') if isinstance(row, dict) else None
    if not isinstance(step, int) or isinstance(step, bool):
      if on_skip:
        on_skip(number, 'has no integer "step"')
      continue
    rows.append(row)
  return rows
