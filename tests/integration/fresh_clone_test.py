"""A fresh clone, offline, with no ../shared beside it: the quick start trains from the package."""

import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import pytest

from tests import testdata

REPO = testdata.REPO
NO_NETWORK = 'http://127.0.0.1:9'  # a proxy on a closed port: every download is refused
# A path into the project's shared data folder: ../shared, 'shared' / 'data', shared/data.
SHARED_PATH = re.compile(r"\.\./shared\b|['\"]shared['\"]|\bshared[/\\]data|shared_data_dir")
# benchmarks/ is exempt: its figures come from the development machine, which has ../shared.
SCANNED = ('jaxlm', 'experiments', 'notebooks', 'tests')


def _clone(root: pathlib.Path) -> pathlib.Path:
  """The files git tracks (as in the working tree), copied to root/repo: a fresh clone."""
  names = subprocess.run(['git', 'ls-files', '-z'], cwd=REPO, capture_output=True,
                         check=True).stdout.decode().split('\0')
  clone = root / 'repo'
  for name in filter(None, names):
    if (REPO / name).is_file():  # a tracked file deleted in the working tree is left out
      (clone / name).parent.mkdir(parents=True, exist_ok=True)
      shutil.copy2(REPO / name, clone / name)
  assert not (root / 'shared').exists()
  return clone


def _offline_env(root: pathlib.Path, clone: pathlib.Path) -> dict:
  """A user's environment: empty HOME and TFDS folder, no network, jaxlm from the clone."""
  env = {k: v for k, v in os.environ.items()
         if k.lower() not in ('no_proxy', 'all_proxy', 'pythonpath') and not k.startswith('JAXLM')}
  for name in ('http_proxy', 'https_proxy', 'HTTP_PROXY', 'HTTPS_PROXY'):
    env[name] = NO_NETWORK
  for name in ('home', 'tfds'):
    (root / name).mkdir()
  env.update(HOME=str(root / 'home'), TFDS_DATA_DIR=str(root / 'tfds'), PYTHONPATH=str(clone),
             XLA_FLAGS=os.environ['XLA_FLAGS'].replace(  # one CPU device, as a laptop
                 '--xla_force_host_platform_device_count=8', ''))
  return env


def _main(clone, env, *flags, timeout):
  cmd = [sys.executable, '-m', 'jaxlm.main', '--config=experiments/gpt_small.py', *flags]
  start = time.perf_counter()
  out = subprocess.run(cmd, cwd=clone, env=env, capture_output=True, text=True, timeout=timeout)
  return out, time.perf_counter() - start


@pytest.mark.slow
def test_the_quick_start_trains_offline_from_the_bundled_corpus(tmp_path):
  clone = _clone(tmp_path)
  env = _offline_env(tmp_path, clone)
  out, seconds = _main(clone, env, f'--workdir={tmp_path / "run"}', '--config.train.steps=3',
                       '--config.train.warmup_steps=1', '--config.train.log_every=1',
                       '--config.train.eval_every=3', '--config.train.eval_steps=2',
                       '--config.train.checkpoint_every=3', '--config.train.sample_tokens=0',
                       timeout=300)
  print(f'the offline quick start took {seconds:.1f}s')
  assert out.returncode == 0, out.stderr[-3000:]
  # The corpus came from the clone's package, through TFDS, into the empty TFDS_DATA_DIR.
  corpus = clone / 'jaxlm' / 'data' / 'corpora' / 'tiny_shakespeare'
  assert (f'data: preparing TFDS tiny_shakespeare from the copy bundled with jaxlm ({corpus}),'
          ' not a download') in out.stdout.splitlines()
  assert (tmp_path / 'tfds' / 'tiny_shakespeare' / '1.0.0').is_dir()
  assert re.search(r'train step +3/3 \| loss', out.stdout), out.stdout
  assert re.search(r'eval  step +3 \| loss', out.stdout), out.stdout
  assert os.listdir(tmp_path / 'run' / 'checkpoints') == ['3']
  assert 'Retrying' not in out.stderr and 'Traceback' not in out.stderr
  assert seconds < 120


def test_a_dataset_that_must_download_fails_offline_in_one_line_at_once(tmp_path):
  clone = _clone(tmp_path)
  env = _offline_env(tmp_path, clone)
  out, seconds = _main(clone, env, f'--workdir={tmp_path / "run"}',
                       '--config.data.dataset=ag_news_subset',
                       '--config.data.text_key=description', timeout=120)
  print(f'the offline download failed after {seconds:.1f}s')
  assert out.returncode == 1, out.stderr[-3000:]
  lines = [line for line in out.stderr.splitlines() if line.startswith('error:')]
  assert len(lines) == 1, out.stderr[-3000:]
  assert lines[0].startswith('error: TFDS ag_news_subset must download from drive.google.com,'
                             ' which cannot be reached'), lines[0]
  assert 'data.manual_dir' in lines[0] and 'data.source=files' in lines[0]
  assert 'Retrying' not in out.stderr and 'Traceback' not in out.stderr
  assert seconds < 30, seconds  # TFDS's own retries took 212 s offline


def test_no_file_points_at_the_shared_folder():
  found = []
  for top in SCANNED:
    for path in sorted((REPO / top).rglob('*')):
      if path.is_file() and '__pycache__' not in path.parts and path != pathlib.Path(__file__):
        for number, line in enumerate(path.read_text('utf-8', 'replace').splitlines(), 1):
          if SHARED_PATH.search(line):
            found.append(f'{path.relative_to(REPO)}:{number}: {line.strip()[:100]}')
  assert not found, 'a fresh clone has no ../shared:\n' + '\n'.join(found)
