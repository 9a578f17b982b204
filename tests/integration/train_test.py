"""The training run: end to end through main, resume, bad input."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from jaxlm.training import loop as train
from jaxlm.config import ConfigError
from tests import forked, testdata
from tests.configs import tiny_config

REPO = str(testdata.REPO)


def _metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def _config(shakespeare_dir, tfds_dir, **overrides):
  base = dict(data__manual_dir=shakespeare_dir, data__tfds_data_dir=tfds_dir,
              model__vocab_size=0, train__steps=8, train__log_every=1,
              train__eval_every=4, train__eval_steps=2, train__checkpoint_every=4,
              train__sample_tokens=0)
  return tiny_config(**{**base, **overrides})


@pytest.mark.slow
def test_main_end_to_end(tmp_path, shakespeare_dir, tfds_dir):
  workdir = tmp_path / 'run'
  cmd = [sys.executable, '-m', 'jaxlm.main', '--config=experiments/gpt_small.py',
         f'--workdir={workdir}', f'--config.data.manual_dir={shakespeare_dir}',
         f'--config.data.tfds_data_dir={tfds_dir}', '--config.data.batch_size=16',
         '--config.model.num_layers=2', '--config.model.d_model=64',
         '--config.model.d_ff=128', '--config.data.seq_len=32',
         '--config.train.steps=30', '--config.train.warmup_steps=5',
         '--config.train.log_every=10', '--config.train.eval_every=15',
         '--config.train.eval_steps=2', '--config.train.checkpoint_every=15',
         '--config.train.sample_tokens=40']
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "mesh {'data': 8, 'model': 1, 'pipeline': 1}" in out.stdout
  assert 'layout (data, model, pipeline)=(8, 1, 1), zero_stage=0, remat=none;' in out.stdout
  assert 'train step     30/30 | loss' in out.stdout
  assert 'eval  step     30 | loss' in out.stdout
  assert 'sample:\nROMEO:' in out.stdout

  rows = _metrics(workdir)
  train_rows = [r for r in rows if 'loss' in r]
  assert [r['step'] for r in train_rows] == [10, 20, 30]
  for key in ('loss', 'learning_rate', 'tokens_per_sec', 'grad_norm', 'mfu'):
    assert key in train_rows[0]
  assert [r['step'] for r in rows if 'eval_loss' in r] == [15, 30]
  assert train_rows[-1]['loss'] < train_rows[0]['loss']
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['15', '30']
  assert (workdir / 'sample.txt').read_text().startswith('ROMEO:')
  assert any(name.startswith('events') for name in os.listdir(workdir / 'tensorboard'))


@pytest.mark.slow
@pytest.mark.parametrize('pack', [False, True], ids=['windows', 'packed documents'])
def test_resume_continues_the_same_loss_curve(tmp_path, shakespeare_dir, tfds_dir, pack,
                                             monkeypatch):
  # Mid-epoch (8 steps are a sliver of one): batches are pure in (seed, step), windows
  # or packed rows alike, so the resumed steps are the uninterrupted ones bit for bit.
  from jaxlm.data import packing
  packed_steps, real = [], packing.packed_train_batch

  def packed_train_batch(tokens, offsets, step, **kw):
    packed_steps.append(step)
    return real(tokens, offsets, step, **kw)

  monkeypatch.setattr(packing, 'packed_train_batch', packed_train_batch)
  cfg = _config(shakespeare_dir, tfds_dir, model__dropout=0.1, data__pack=pack)
  whole = tmp_path / 'whole'
  train.run(cfg, str(whole))
  # A run that stopped after its step-4 checkpoint: the same folder without
  # what came later, then restarted on it.
  cut = tmp_path / 'cut'
  shutil.copytree(whole, cut)
  shutil.rmtree(cut / 'checkpoints' / '8')
  os.remove(cut / 'metrics.jsonl')
  result = train.run(cfg, str(cut))
  assert result['step'] == 8
  resumed = {r['step']: r for r in _metrics(cut) if 'loss' in r}
  original = {r['step']: r for r in _metrics(whole) if 'loss' in r}
  assert sorted(resumed) == [5, 6, 7, 8]
  for step in resumed:
    assert resumed[step]['loss'] == original[step]['loss'], step
    assert resumed[step]['grad_norm'] == original[step]['grad_norm'], step
  assert bool(packed_steps) == pack  # the rows were packed documents, or windows


def test_resume_refuses_another_model_and_keeps_the_checkpoint(tmp_path, shakespeare_dir,
                                                               tfds_dir):
  workdir = str(tmp_path / 'run')
  train.run(_config(shakespeare_dir, tfds_dir, train__steps=4), workdir)
  before = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
  with pytest.raises(ConfigError, match=r'different model: model\.d_model=32 there, 64 now'):
    train.run(_config(shakespeare_dir, tfds_dir, model__d_model=64), workdir)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == before == ['4']


@pytest.mark.parametrize('overrides, match', [
    ({'parallel__data': 3}, r'mesh \(data, model, pipeline\)=\(3, 1, 1\) needs 3 devices'
                            r' but 8 are present; set parallel\.data=-1'),
    ({'data__batch_size': 12}, r'data\.batch_size=12 .* not divisible by the data axis \(8\)'),
    ({'model__num_heads': 5}, r'model\.num_heads=5 does not divide model\.d_model=32'),
    ({'data__dataset': 'no_such_dataset'}, r"data\.dataset='no_such_dataset' is not a TFDS"),
    ({'data__tokenizer': 'words'}, r"data\.tokenizer='words' is not one of: char, byte"),
    ({'data__manual_dir': '/no/such/dir'}, r'data\.manual_dir=/no/such/dir does not exist'),
])
def test_bad_input_stops_before_any_work(tmp_path, shakespeare_dir, tfds_dir, overrides, match):
  workdir = tmp_path / 'run'
  with pytest.raises(ConfigError, match=match):
    train.run(_config(shakespeare_dir, tfds_dir, **overrides), str(workdir))
  assert not (workdir / 'checkpoints').exists()


def test_main_prints_one_line_errors(tmp_path):
  cmd = ['jaxlm.main', '--config=experiments/gpt_small.py', f'--workdir={tmp_path}',
         '--config.model.num_heads=3']
  out = forked.run_module(cmd, REPO)
  assert out.returncode == 1
  lines = [x for x in out.stderr.splitlines() if x.startswith('error:')]
  assert lines == ['error: model.num_heads=3 does not divide model.d_model=128;'
                   ' pick num_heads among the divisors of d_model, or set model.head_size']
  assert 'Traceback' not in out.stderr
