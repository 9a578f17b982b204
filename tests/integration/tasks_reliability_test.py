"""Every task survives what pretraining survives: one loop, the same guarantees.

Each test runs for causal-LM pretraining and for classification fine-tuning:
the NaN/Inf guard (skip and halt), a SIGTERM checkpoint and its resume, kill -9
at random moments resuming onto the uninterrupted loss curve, and a corrupt
newest checkpoint falling back to the one before it with a message.
Data are small generated files, so nothing here needs a download.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from jaxlm import config as config_lib
from jaxlm.experiments import load_configdict
from jaxlm.tasks import classify, lm
from jaxlm.training import loop
from jaxlm.training.health import NonFiniteHalt
from tests import testdata

TASKS = ['lm', 'classify']
EXPERIMENT = {'lm': str(testdata.REPO / 'experiments/gpt_small.py'),
              'classify': str(testdata.REPO / 'experiments/agnews_classifier.py')}
TOKENS_KEY = {'lm': 'inputs', 'classify': 'tokens'}
TASK_CLASS = {'lm': lm.LanguageModelling, 'classify': classify.Classification}
WORDS = [['goal', 'match', 'team', 'cup'], ['vote', 'war', 'treaty', 'king'],
         ['bank', 'stock', 'trade', 'price'], ['chip', 'code', 'robot', 'space']]


def _data(tmp_path, task) -> dict:
  """Settings that point the task at small generated files."""
  rng = random.Random(0)
  if task == 'lm':
    text = '\n'.join(' '.join(rng.choice(sum(WORDS, [])) for _ in range(12)) for _ in range(400))
    path = tmp_path / 'corpus.txt'
    path.write_text(text)
    return {'data.source': 'files', 'data.train_files': str(path)}
  rows = []
  for i in range(160):
    label = i % 4
    words = ' '.join(rng.choice(WORDS[label]) for _ in range(6))
    rows.append(f'"{label + 1}","title {i}","{words}"')
  path = tmp_path / 'labelled.csv'
  path.write_text('\n'.join(rows) + '\n')
  return {'data.source': 'csv', 'data.train_files': str(path), 'data.eval_files': '',
          'data.eval_holdout': 0.25}


def _settings(tmp_path, task, steps, **extra) -> dict:
  """A tiny model of the task's experiment, `steps` steps, every step logged."""
  s = {'model.num_layers': 2, 'model.num_heads': 4, 'model.d_model': 32, 'model.d_ff': 64,
       'model.max_len': 16, 'model.dropout': 0.0, 'model.vocab_multiple': 8,
       'data.batch_size': 16, 'train.steps': steps, 'train.warmup_steps': 2,
       'train.log_every': 1, 'train.eval_every': steps, 'train.checkpoint_every': 4,
       'train.keep_checkpoints': 3, **_data(tmp_path, task)}
  if task == 'lm':
    s.update({'data.seq_len': 16, 'train.eval_steps': 1, 'train.sample_tokens': 0})
  else:
    s.update({'data.max_length': 16})
  s.update({k.replace('__', '.'): v for k, v in extra.items()})
  return s


def _config(tmp_path, task, steps, **extra) -> config_lib.Config:
  return config_lib.from_configdict(load_configdict(EXPERIMENT[task],
                                                    _settings(tmp_path, task, steps, **extra)))


def _cmd(tmp_path, task, workdir, steps, **extra) -> list[str]:
  flags = [f'--config.{k}={v}' for k, v in _settings(tmp_path, task, steps, **extra).items()]
  return [sys.executable, '-m', 'jaxlm.main', f'--config={EXPERIMENT[task]}',
          f'--workdir={workdir}', *flags]


def _losses(workdir) -> dict[int, float]:
  """The last logged loss of each step (a resumed run may log a step twice)."""
  out = {}
  for line in (workdir / 'metrics.jsonl').read_text().splitlines():
    try:
      row = json.loads(line)
    except json.JSONDecodeError:  # cut short by kill -9; its step is logged again on resume
      continue
    if 'loss' in row:
      out[row['step']] = row['loss']
  return out


def _wait_for(proc, text, timeout=300):
  lines, deadline = [], time.time() + timeout
  while time.time() < deadline:
    line = proc.stdout.readline()
    if not line:
      break
    lines.append(line)
    if line.startswith(text):
      return lines
  raise AssertionError(f'never printed {text!r}:\n{"".join(lines)[-3000:]}')


def _checkpoints(workdir) -> list[int]:
  path = workdir / 'checkpoints'
  return sorted(int(n) for n in os.listdir(path) if n.isdigit()) if path.is_dir() else []


def _poison(monkeypatch, task, bad_step):
  """The task's batch at `bad_step` gets an out-of-vocabulary token: its loss is NaN."""
  cls = TASK_CLASS[task]
  original = cls.train_batch

  def poisoned(self, step, process_index, process_count):
    batch = original(self, step, process_index, process_count)
    if step == bad_step:
      batch = {k: v.copy() for k, v in batch.items()}
      batch[TOKENS_KEY[task]][0, 0] = self.config.model.vocab_size + 5
    return batch
  monkeypatch.setattr(cls, 'train_batch', poisoned)


@pytest.mark.parametrize('task', TASKS)
def test_skip_counts_the_nonfinite_step_and_trains_on(tmp_path, task, monkeypatch, capsys):
  _poison(monkeypatch, task, 5)
  result = loop.run(_config(tmp_path, task, 8, train__on_nonfinite='skip'), str(tmp_path / 'run'))
  assert result['step'] == 8
  lines = (tmp_path / 'run' / 'metrics.jsonl').read_text().splitlines()
  rows = [json.loads(line) for line in lines]
  counts = [r['nonfinite_steps'] for r in rows if 'loss' in r]
  assert counts == [0] * 5 + [1] * 3
  assert 'step 6: not finite' in capsys.readouterr().out


@pytest.mark.parametrize('task', TASKS)
def test_halt_saves_the_last_good_state(tmp_path, task, monkeypatch):
  _poison(monkeypatch, task, 5)
  workdir = tmp_path / 'run'
  with pytest.raises(NonFiniteHalt, match=r'step 6 is not finite .*saved the last good state'
                                          r' as checkpoint 5'):
    loop.run(_config(tmp_path, task, 8, train__on_nonfinite='halt',
                     train__checkpoint_every=100), str(workdir))
  assert _checkpoints(workdir) == [5]


@pytest.mark.parametrize('task', TASKS)
def test_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path, task, capsys):
  c = _config(tmp_path, task, 8)
  whole = tmp_path / 'whole'
  loop.run(c, str(whole))
  workdir = tmp_path / 'run'
  shutil.copytree(whole, workdir)  # the same run, whose newest checkpoint then rots
  os.remove(workdir / 'metrics.jsonl')
  for root, _, files in os.walk(workdir / 'checkpoints' / '8' / 'state'):
    for name in files:
      with open(os.path.join(root, name), 'wb') as f:
        f.write(b'\x00garbage')
  capsys.readouterr()
  result = loop.run(c, str(workdir))
  out = capsys.readouterr().out
  assert result['step'] == 8
  assert 'checkpoint 8 is unreadable' in out and 'resuming from checkpoint 4' in out
  assert [n.split('-')[0] for n in os.listdir(workdir / 'checkpoints_set_aside')] == ['8']
  assert _losses(workdir) == {s: v for s, v in _losses(whole).items() if s > 4}


@pytest.mark.slow
@pytest.mark.parametrize('task', TASKS)
def test_sigterm_checkpoints_exits_0_and_resumes(tmp_path, task):
  workdir = tmp_path / 'run'
  cmd = _cmd(tmp_path, task, workdir, 100000, train__checkpoint_every=100000,
             train__log_every=10)
  proc = subprocess.Popen(cmd, cwd=testdata.REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  _wait_for(proc, 'train step ')
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, out[-3000:]
  line = [x for x in out.splitlines() if x.startswith('stopped by SIGTERM')]
  assert line, out[-3000:]
  step = int(line[0].split('after step ')[1].split(';')[0])
  assert _checkpoints(workdir) == [step]
  proc = subprocess.Popen(cmd, cwd=testdata.REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  _wait_for(proc, f'resumed from step {step}')
  _wait_for(proc, 'train step ')
  proc.send_signal(signal.SIGINT)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0 and 'stopped by SIGINT' in out, out[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize('task', TASKS)
def test_kill_9_resumes_onto_the_uninterrupted_curve(tmp_path, task):
  steps = 120
  whole = tmp_path / 'whole'  # the uninterrupted curve, in this process: the same program
  loop.run(_config(tmp_path, task, steps), str(whole))
  workdir = tmp_path / 'run'
  cmd = _cmd(tmp_path, task, workdir, steps)
  rng = random.Random(0)
  expected = None  # the newest complete checkpoint when the last run died
  for _ in range(2):
    proc = subprocess.Popen(cmd, cwd=testdata.REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = _wait_for(proc, 'compiled the train step')
    if expected:
      assert f'resumed from step {expected}\n' in lines, ''.join(lines)
    time.sleep(rng.uniform(0.2, 1.5))
    proc.kill()  # SIGKILL: no handler runs
    proc.wait()
    proc.stdout.close()
    expected = (_checkpoints(workdir) or [None])[-1]
  out = subprocess.run(cmd, cwd=testdata.REPO, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  if expected:
    assert f'resumed from step {expected}\n' in out.stdout, out.stdout[-3000:]
  assert _checkpoints(workdir)[-1] == steps
  # Bitwise: a batch is a pure function of (seed, step) and the state is restored whole.
  resumed, uninterrupted = _losses(workdir), _losses(whole)
  assert sorted(resumed) == list(range(1, steps + 1))
  np.testing.assert_array_equal([resumed[s] for s in sorted(resumed)],
                                [uninterrupted[s] for s in sorted(resumed)])
