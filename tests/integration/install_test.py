"""A non-editable install works away from the checkout: the package data is in it, and
sample and evaluate run from another directory with nothing of the repository on the path.

The working tree (tracked and new files, as git sees them) is copied first, so the build
writes its build/ and egg-info into the copy, never into a checkout others work in.
"""

import os
import shutil
import subprocess
import sys

import pytest

from jaxlm.training import loop
from tests import configs, testdata


def _tree_files() -> list[str]:
  listed = subprocess.run(['git', 'ls-files', '--cached', '--others', '--exclude-standard', '-z'],
                          cwd=testdata.REPO, capture_output=True, check=True).stdout
  return [name for name in listed.decode().split('\0')
          if name and os.path.isfile(testdata.REPO / name)]


@pytest.mark.slow
def test_installed_package_samples_and_evaluates_from_elsewhere(tmp_path):
  source, target, elsewhere = tmp_path / 'src', tmp_path / 'site', tmp_path / 'elsewhere'
  for name in _tree_files():
    os.makedirs((source / name).parent, exist_ok=True)
    shutil.copy2(testdata.REPO / name, source / name)
  build = subprocess.run(
      [sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-build-isolation',
       '--no-cache-dir', '--quiet', f'--target={target}', str(source)],
      cwd=tmp_path, capture_output=True, text=True, check=False, timeout=600)
  assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-3000:]
  corpus = target / 'jaxlm' / 'data' / 'corpora' / 'tiny_shakespeare' / 'input.txt'
  assert corpus.is_file() and corpus.stat().st_size > 1_000_000, 'package data missing'

  workdir = str(tmp_path / 'run')
  loop.run(configs.tiny_run_config(configs.write_corpus(tmp_path / 'corpus.txt')), workdir)
  elsewhere.mkdir()
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  env['PYTHONPATH'] = str(target)

  def run(*args):
    result = subprocess.run([sys.executable, *args], cwd=elsewhere, env=env,
                            capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result

  where = run('-c', 'import jaxlm; print(jaxlm.__file__)')
  assert where.stdout.strip().startswith(str(target)), where.stdout  # not the editable checkout

  sampled = run('-m', 'jaxlm.sample', f'--workdir={workdir}', '--prompt=goal ',
                '--max_new_tokens=8', '--temperature=0')
  assert sampled.stdout.startswith('goal ') and 'step 8 of' in sampled.stderr
  evaluated = run('-m', 'jaxlm.evaluate', f'--workdir={workdir}')
  assert f'{workdir} step 8, none weights' in evaluated.stdout
  assert 'perplexity' in evaluated.stdout
  assert os.listdir(elsewhere) == []
