"""Inference restores the newest readable checkpoint, as training does, and moves nothing.

A tiny run is trained in-process (checkpoints 4 and 8), then copied with
checkpoint 8's data files truncated to half, as a disk that filled up while
saving leaves them. Each way in — `python -m jaxlm.sample`, `python -m
jaxlm.evaluate`, `python -m jaxlm.hf export` and `jaxlm.load` — runs as a
user runs it, in a fresh process, and must fall back to checkpoint 4 with
exactly one line on stderr and no traceback.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from jaxlm import config as config_lib
from jaxlm.config import ConfigError
from jaxlm.inference import restore
from jaxlm.interop import hf as hf_interop
from jaxlm.training import loop
from tests import configs, testdata

WARNING = r'^warning: checkpoint 8 is unreadable \(\w+: .+\); using checkpoint 4$'


def truncate(workdir, step: int) -> None:
  """Cuts every array data file of checkpoint `step` to half its size."""
  for root, _, files in os.walk(os.path.join(workdir, 'checkpoints', str(step), 'state')):
    if os.path.basename(root) == 'd':
      for name in files:
        path = os.path.join(root, name)
        os.truncate(path, os.path.getsize(path) // 2)


def _listing(root) -> list[str]:
  return sorted(os.path.relpath(os.path.join(d, n), root)
                for d, dirs, files in os.walk(root) for n in dirs + files)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """(intact run folder, the same with checkpoint 8 truncated)."""
  root = tmp_path_factory.mktemp('restore')
  corpus = configs.write_corpus(root / 'corpus.txt')
  intact = str(root / 'intact')
  loop.run(configs.tiny_run_config(corpus), intact)
  broken = str(root / 'broken')
  shutil.copytree(intact, broken)
  truncate(broken, 8)
  return intact, broken


def _run(args, cwd) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=str(testdata.REPO))
  return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                        text=True, check=False, timeout=300)


def _one_warning(result, *also) -> None:
  """Exit 0; stderr is the fall-back line (then the lines `also` matches), no traceback."""
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stderr.splitlines()
  assert 'Traceback' not in result.stderr and 'never retrieved' not in result.stderr
  assert len(lines) == 1 + len(also), result.stderr[-3000:]
  assert re.match(WARNING, lines[0]), lines[0]
  for pattern, line in zip(also, lines[1:]):
    assert re.match(pattern, line), line


def test_sample_falls_back_with_one_line(runs, tmp_path):
  intact, broken = runs
  before = _listing(broken)
  result = _run(['-m', 'jaxlm.sample', f'--workdir={broken}', '--prompt=goal ',
                 '--max_new_tokens=6', '--temperature=0'], tmp_path)
  _one_warning(result, r'^step 4 of ')
  assert result.stdout.startswith('goal ')
  assert _listing(broken) == before  # nothing moved, nothing written


def test_evaluate_falls_back_with_one_line(runs, tmp_path):
  _, broken = runs
  result = _run(['-m', 'jaxlm.evaluate', f'--workdir={broken}'], tmp_path)
  _one_warning(result)
  assert f'{broken} step 4, none weights' in result.stdout


def test_export_falls_back_with_one_line(runs, tmp_path):
  intact, broken = runs
  out = tmp_path / 'hf'
  result = _run(['-m', 'jaxlm.hf', 'export', f'--workdir={broken}', f'--out_dir={out}'],
                tmp_path)
  _one_warning(result)
  # Checkpoint 4's weights, bit for bit.
  c, params = hf_interop.read_run_params(intact, 4)
  expected = hf_interop.hf_tensors(params, c.model)
  exported = load_file(str(out / 'model.safetensors'))
  assert sorted(exported) == sorted(expected)
  for name, x in expected.items():
    np.testing.assert_array_equal(exported[name], x, err_msg=name)


def test_jaxlm_load_falls_back_with_one_line(runs, tmp_path):
  _, broken = runs
  script = f'import jaxlm\nprint(jaxlm.load({broken!r}).step)\n'
  result = _run(['-c', script], tmp_path)
  _one_warning(result)
  assert result.stdout.split() == ['4']


def test_fallback_gives_the_previous_checkpoint(runs):
  intact, broken = runs
  said = []
  run = restore.load_run(broken, say=said.append)
  assert run.step == 4 and len(said) == 1 and said[0].startswith('checkpoint 8 is unreadable')
  want = restore.load_run(intact, step=4, say=said.append)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(run.params),
               jax.device_get(want.params))
  assert restore.load_run(intact, say=said.append).step == 8 and len(said) == 1


def test_a_named_step_never_falls_back(runs):
  _, broken = runs
  with pytest.raises(ConfigError, match=r'^checkpoint 8 in \S+ cannot be restored \(') as e:
    restore.load_run(broken, step=8)
  assert '\n' not in str(e.value) and 'tensorstore_spec' not in str(e.value)
  with pytest.raises(ConfigError, match=r'has no checkpoint 5 \(saved: 4, 8\)'):
    restore.load_run(broken, step=5)


def test_two_unreadable_checkpoints_are_one_line_error(runs, tmp_path):
  _, broken = runs
  both = str(tmp_path / 'both')
  shutil.copytree(broken, both)
  truncate(both, 4)
  with pytest.raises(ConfigError, match=r'^checkpoints 8 and 4 in \S+ cannot be restored') as e:
    restore.load_run(both)
  assert '\n' not in str(e.value)


def test_an_old_run_config_reads_with_defaults_in_code(runs, tmp_path, monkeypatch):
  intact, _ = runs
  with open(os.path.join(intact, 'config.json')) as f:
    raw = json.load(f)
  for key in restore.LATER_SETTINGS['train']:
    del raw['train'][key]
  for key in restore.LATER_SETTINGS['parallel']:
    del raw['parallel'][key]
  del raw['profile']
  old = tmp_path / 'old'
  old.mkdir()
  (old / 'config.json').write_text(json.dumps(raw))
  monkeypatch.chdir(tmp_path)  # no experiments/ here: nothing may be read from a checkout
  c = restore.read_config(str(old))
  assert c.train.on_nonfinite is config_lib.NonFinite.SKIP and c.train.spike_factor == 0.0
  assert (c.parallel.zero_stage, c.parallel.remat, c.parallel.pipeline_repeats) == (
      0, config_lib.Remat.NONE, 1)
  assert c.profile == config_lib.PROFILE_OFF
  assert c.model == restore.read_config(intact).model
