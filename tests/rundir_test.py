"""The run folder's small files, written and read back on local disk and on gs://.

gs:// is the real route a gs:// run folder takes when TensorFlow is not used
(EPATH_USE_TF=0): etils.epath's gs:// path class and its fsspec backend,
with fsspec's in-memory filesystem registered as the "gcs" protocol in place
of gcsfs, which would need the network. It runs in a subprocess, so that the
registration and the environment variable touch no other test.
"""

import json
import os
import subprocess
import sys

import pytest
from fsspec.implementations.memory import MemoryFileSystem

from jaxlm import config as config_lib
from jaxlm import plot, rundir
from jaxlm.config import ConfigError
from jaxlm.data import tokenizers
from jaxlm.experiments import load_configdict
from tests import testdata

GCS_RUN = 'gs://bucket/runs/small'
SP_TEXT = [f'line {i}: the quick brown fox jumps over the lazy dog {i % 7}' for i in range(300)]


class InMemoryGCS(MemoryFileSystem):
  """fsspec's memory filesystem answering for gs:// paths, as gcsfs would."""
  protocol = ('gs', 'gcs')
  store = {}  # its own, not the memory:// one
  pseudo_dirs = ['']

  def __init__(self, *args, finalize_on_close=None, **kwargs):  # epath passes gcsfs's option
    super().__init__(*args, **kwargs)

  @classmethod
  def _strip_protocol(cls, path):
    path = str(path)
    for prefix in ('gs://', 'gcs://'):
      path = path.removeprefix(prefix)
    return super()._strip_protocol(path)


def _round_trip(workdir: str) -> None:
  """Writes config, tokenizers, metrics and sample of a run folder; reads them back."""
  assert not rundir.exists(workdir)
  c = config_lib.from_configdict(load_configdict(testdata.REPO / 'experiments/gpt_small.py'))
  rundir.write_config_dict(workdir, config_lib.to_dict(c))
  assert rundir.exists(workdir)
  assert config_lib.from_configdict(rundir.read_config_dict(workdir)) == c

  char = tokenizers.CharTokenizer.train(['to be, or not to be\n'])
  char.save(workdir)
  assert tokenizers.load_tokenizer(workdir).chars == char.chars
  sp = tokenizers.SentencePieceTokenizer.train(SP_TEXT, 300)
  sp.save(workdir)  # the same folder: the spec now names sentencepiece
  loaded = tokenizers.load_tokenizer(workdir)
  assert loaded.model_proto == sp.model_proto
  assert loaded.decode(loaded.encode(SP_TEXT[3])) == SP_TEXT[3]

  with rundir.open_metrics(workdir) as f:
    f.write(json.dumps({'step': 1, 'loss': 3.0}) + '\n')
    f.write('{"step": 2, "loss": 2.')  # cut short by a crash
  with rundir.open_metrics(workdir) as f:  # a resume: the cut row ends on its own line
    f.write(json.dumps({'step': 2, 'loss': 2.5, 'eval_loss': 2.75}) + '\n')
  skipped = []
  rows = rundir.read_metric_rows(workdir, on_skip=lambda n, why: skipped.append((n, why)))
  assert rows == [{'step': 1, 'loss': 3.0}, {'step': 2, 'loss': 2.5, 'eval_loss': 2.75}]
  assert skipped == [(2, 'is not JSON')]
  assert plot.read_metrics(workdir) == {'loss': [(1, 3.0), (2, 2.5)], 'eval_loss': [(2, 2.75)]}

  rundir.write_sample(workdir, 'ROMEO: hi')
  assert rundir.read_sample(workdir) == 'ROMEO: hi\n'
  assert rundir.checkpoint_steps(workdir) == [] and not rundir.has_checkpoints(workdir)
  names = sorted(p.name for p in rundir.path(workdir).iterdir())
  assert names == ['config.json', 'metrics.jsonl', 'sample.txt', 'tokenizer.json',
                   'tokenizer.model'], names


def test_local_run_folder_round_trip(tmp_path, capsys):
  _round_trip(str(tmp_path / 'run'))
  assert 'line 2 is not JSON; skipped' in capsys.readouterr().err  # plot's warning
  assert str(rundir.checkpoints_dir('rel/run')) == os.path.abspath('rel/run/checkpoints')


def gcs_round_trip() -> None:
  """The subprocess's body: the round trip on gs://, then what the store holds."""
  import fsspec
  fsspec.register_implementation('gs', InMemoryGCS, clobber=True)
  fsspec.register_implementation('gcs', InMemoryGCS, clobber=True)
  assert type(rundir.path(GCS_RUN)._backend).__name__ == '_FileSystemSpecBackend'
  _round_trip(GCS_RUN)
  assert str(rundir.checkpoints_dir(GCS_RUN)) == f'{GCS_RUN}/checkpoints'
  print(json.dumps(sorted(InMemoryGCS.store)))


def test_gcs_run_folder_round_trip(tmp_path):
  env = dict(os.environ, EPATH_USE_TF='0', PYTHONPATH=str(testdata.REPO))
  result = subprocess.run(
      [sys.executable, '-c', 'from tests import rundir_test; rundir_test.gcs_round_trip()'],
      cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  stored = json.loads(result.stdout.splitlines()[-1])
  assert stored == [f'/bucket/runs/small/{name}' for name in (
      'config.json', 'metrics.jsonl', 'sample.txt', 'tokenizer.json', 'tokenizer.model')]
  assert os.listdir(tmp_path) == []  # nothing landed on local disk (no "gs:" folder)


def test_missing_files_are_one_line_errors(tmp_path):
  with pytest.raises(ConfigError, match=r'--workdir=\S+ does not exist'):
    rundir.read_config_dict(str(tmp_path / 'nowhere'))
  with pytest.raises(ConfigError, match=r'holds no config\.json'):
    rundir.read_config_dict(str(tmp_path))
  (tmp_path / 'config.json').write_text('{"model": ')
  with pytest.raises(ConfigError, match=r'config\.json is not JSON') as e:
    rundir.read_config_dict(str(tmp_path))
  assert '\n' not in str(e.value)
  (tmp_path / 'tokenizer.json').write_text('{"kind": "sentencepiece", "vocab_size": 300}')
  with pytest.raises(ConfigError, match=r'but no tokenizer\.model'):
    rundir.read_tokenizer(str(tmp_path))
