"""When things go wrong in pretraining: a NaN step, an unfinished checkpoint, another mesh,
several processes, corrupt data. What every task survives (signals, kill -9, the NaN guard
in the loop, a corrupt newest checkpoint) is in tasks_reliability_test.py."""

import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxlm.data import lm as data_lib
from jaxlm.parallel import distributed
from jaxlm.parallel import sharding
from jaxlm.training import steps as steps_lib
from jaxlm.training import loop as train
from jaxlm.config import ConfigError, NonFinite
from jaxlm.training.health import NonFiniteHalt
from tests.parallel import equivalence_test as parallel_test
from tests import testdata
from tests.configs import tiny_config

REPO = str(testdata.REPO)


def _metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def _losses(workdir):
  return {r['step']: r['loss'] for r in _metrics(workdir) if 'loss' in r}


def _config(shakespeare_dir, tfds_dir, **overrides):
  base = dict(data__manual_dir=shakespeare_dir, data__tfds_data_dir=tfds_dir,
              model__vocab_size=0, model__vocab_multiple=8, train__steps=8,
              train__log_every=1, train__eval_every=8, train__eval_steps=1,
              train__checkpoint_every=4, train__sample_tokens=0)
  return tiny_config(**{**base, **overrides})


def _poisoned(batch_fn, bad_step, vocab):
  """train_batch with an out-of-vocabulary token at `bad_step`: its loss is NaN."""
  def poisoned(tokens, step, **kwargs):
    batch = batch_fn(tokens, step, **kwargs)
    if step == bad_step:
      batch = {k: v.copy() for k, v in batch.items()}
      batch['inputs'][0, 0] = vocab + 5  # jnp.take fills out-of-range rows with NaN
    return batch
  return poisoned


# --- NaN / Inf ---------------------------------------------------------------


@pytest.mark.parametrize('policy', ['skip', 'halt'])
def test_a_nonfinite_step_changes_nothing(policy):
  cfg = tiny_config(train__on_nonfinite=policy)
  good, other = parallel_test._batches(cfg, 2)
  bad = {'inputs': good['inputs'].copy(), 'targets': good['targets']}
  bad['inputs'][0, 0] = cfg.model.vocab_size + 5
  mesh = sharding.make_mesh(cfg.parallel)
  with sharding.activate(mesh):
    s = steps_lib.build(cfg, mesh)
    state = s.init()
    put = lambda b: jax.device_put(b, sharding.batch_sharding(mesh))
    state, _ = s.train(state, put(good))
    before = jax.device_get(state)
    state, metrics = s.train(state, put(bad))
    assert not np.isfinite(float(metrics['loss']))
    assert int(metrics['nonfinite_steps']) == 1
    after = jax.device_get(state)
    jax.tree.map(np.testing.assert_array_equal, before.params, after.params)
    jax.tree.map(np.testing.assert_array_equal, before.opt_state, after.opt_state)
    state, metrics = s.train(state, put(other))  # a good batch after the bad one
    final = jax.device_get(state)
  if policy == 'skip':  # the data moves on; the next step trains
    assert int(after.step) == 2 and int(final.step) == 3
    assert np.isfinite(float(metrics['loss']))
    assert not np.array_equal(final.params['wte'], after.params['wte'])
  else:  # frozen at the last good state until the host stops
    assert int(after.step) == 1 and int(final.step) == 1
    jax.tree.map(np.testing.assert_array_equal, after.params, final.params)


def test_halt_saves_the_last_good_state(tmp_path, shakespeare_dir, tfds_dir, monkeypatch):
  cfg = _config(shakespeare_dir, tfds_dir, train__on_nonfinite='halt', train__checkpoint_every=100)
  monkeypatch.setattr(data_lib, 'train_batch', _poisoned(data_lib.train_batch, 5, 72))
  workdir = tmp_path / 'run'
  with pytest.raises(NonFiniteHalt, match=r'step 6 is not finite .*saved the last good state'
                                          r' as checkpoint 5'):
    train.run(cfg, str(workdir))
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['5']
  # Checkpoint 5 is the state after 5 good steps, as in a clean run.
  monkeypatch.undo()
  clean = tmp_path / 'clean'
  # (The same policy: with another one the step is another program, which XLA may fuse
  # into another order of float operations.)
  train.run(_config(shakespeare_dir, tfds_dir, train__on_nonfinite='halt',
                    train__checkpoint_every=5), str(clean))
  from jaxlm.training.checkpoint import Checkpointer
  mesh = sharding.make_mesh(cfg.parallel)
  with sharding.activate(mesh):
    abstract = steps_lib.build(train_config_with_vocab(cfg, 72), mesh).abstract_state
    restored = [Checkpointer(str(w), keep=3, every=100).restore(5, abstract)
                for w in (workdir, clean)]
  jax.tree.map(np.testing.assert_array_equal, restored[0].params, restored[1].params)


def train_config_with_vocab(cfg, vocab):
  from jaxlm import config as config_lib
  return config_lib.resolve_vocab(cfg, vocab)


def test_loss_spikes_are_logged():
  from jaxlm.training.health import LossWatch
  lines = []
  watch = LossWatch(NonFinite.SKIP, 3.0, lines.append)
  for step, loss in enumerate([2.0, 2.1, 1.9, 7.5, 2.0], 1):
    watch.check(step, {'loss': loss, 'grad_norm': 1.0, 'nonfinite_steps': 0})
  assert len(lines) == 1 and lines[0].startswith('loss spike at step 4: 7.5000')


# --- Signals and kill -9 ------------------------------------------------------


def _main_cmd(workdir, shakespeare_dir, tfds_dir, steps, *extra):
  return [sys.executable, '-m', 'jaxlm.main', '--config=experiments/gpt_small.py',
          f'--workdir={workdir}', f'--config.data.manual_dir={shakespeare_dir}',
          f'--config.data.tfds_data_dir={tfds_dir}', '--config.data.batch_size=16',
          '--config.model.num_layers=2', '--config.model.d_model=32',
          '--config.model.max_len=16',
          '--config.model.d_ff=64', '--config.data.seq_len=16',
          f'--config.train.steps={steps}', '--config.train.warmup_steps=2',
          '--config.train.log_every=10', f'--config.train.eval_every={steps}',
          '--config.train.eval_steps=1', '--config.train.sample_tokens=0', *extra]


def _complete_checkpoints(workdir):
  path = os.path.join(workdir, 'checkpoints')
  return sorted(int(n) for n in os.listdir(path) if n.isdigit()) if os.path.isdir(path) else []


def test_corrupt_and_unfinished_checkpoints_are_set_aside(tmp_path, shakespeare_dir, tfds_dir,
                                                          capsys):
  cfg = _config(shakespeare_dir, tfds_dir)
  whole = tmp_path / 'whole'
  train.run(cfg, str(whole))
  workdir = tmp_path / 'run'
  shutil.copytree(whole, workdir)
  os.remove(workdir / 'metrics.jsonl')
  # Checkpoint 8 rots on disk; a save of step 12 was killed half-way.
  for root, _, files in os.walk(workdir / 'checkpoints' / '8' / 'state'):
    for name in files:
      with open(os.path.join(root, name), 'wb') as f:
        f.write(b'\x00garbage')
  unfinished = workdir / 'checkpoints' / '12.orbax-checkpoint-tmp-1234'
  (unfinished / 'state').mkdir(parents=True)
  capsys.readouterr()
  result = train.run(cfg, str(workdir))
  out = capsys.readouterr().out
  assert result['step'] == 8
  assert 'checkpoint 12 was never finished' in out
  assert 'checkpoint 8 is unreadable' in out and 'resuming from checkpoint 4' in out
  aside = sorted(os.listdir(workdir / 'checkpoints_set_aside'))
  assert [n.split('-')[0] for n in aside] == ['12.orbax', '8'], aside
  assert _losses(workdir) == {s: v for s, v in _losses(whole).items() if s > 4}


# --- Another mesh, several processes -----------------------------------------


@pytest.mark.slow
def test_restore_on_another_mesh(tmp_path, shakespeare_dir, tfds_dir):
  """Saved on (8, 1, 1); continued on (2, 4, 1), (4, 1, 2) and one device."""
  base = dict(train__steps=4, train__checkpoint_every=2, train__eval_every=4)
  saved = tmp_path / 'saved'
  train.run(_config(shakespeare_dir, tfds_dir, parallel__data=8, **base), str(saved))
  original = _losses(saved)

  def cut(name):
    workdir = tmp_path / name
    shutil.copytree(saved, workdir)  # as if it had stopped after step 2
    shutil.rmtree(workdir / 'checkpoints' / '4')
    os.remove(workdir / 'metrics.jsonl')
    return workdir

  for name, layout in [('2x4x1', dict(parallel__data=2, parallel__model=4)),
                       ('4x1x2', dict(parallel__data=4, parallel__pipeline=2,
                                      parallel__microbatches=2))]:
    workdir = cut(name)
    train.run(_config(shakespeare_dir, tfds_dir, **layout, **base), str(workdir))
    resumed = _losses(workdir)
    assert sorted(resumed) == [3, 4], name
    np.testing.assert_allclose([resumed[3], resumed[4]], [original[3], original[4]],
                               rtol=parallel_test.RTOL, err_msg=name)
  workdir = cut('one_device')
  cmd = _main_cmd(workdir, shakespeare_dir, tfds_dir, 4, '--config.train.checkpoint_every=2',
                  '--config.train.log_every=1', '--config.model.vocab_multiple=8',
                  '--config.parallel.data=1')
  env = dict(os.environ, XLA_FLAGS=os.environ['XLA_FLAGS'].replace(  # conftest's, on 1
      'device_count=8', 'device_count=1'))
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "mesh {'data': 1, 'model': 1, 'pipeline': 1} on 1 cpu" in out.stdout
  resumed = _losses(workdir)
  np.testing.assert_allclose([resumed[3], resumed[4]], [original[3], original[4]],
                             rtol=parallel_test.RTOL)


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path, shakespeare_dir, tfds_dir):
  """2 processes x 4 CPU devices over gloo == 1 process x 8 devices, step for step."""
  single = tmp_path / 'single'
  train.run(_config(shakespeare_dir, tfds_dir, train__steps=6, train__checkpoint_every=3),
            str(single))
  workdir = tmp_path / 'multi'
  cmd = _main_cmd(workdir, shakespeare_dir, tfds_dir, 6, '--config.train.checkpoint_every=3',
                  '--config.train.log_every=1', '--config.model.vocab_multiple=8',
                  f'--coordinator_address=localhost:{_free_port()}', '--num_processes=2')
  env = dict(os.environ, XLA_FLAGS=os.environ['XLA_FLAGS'].replace(  # conftest's, on 4
      'device_count=8', 'device_count=4'))
  procs = [subprocess.Popen(cmd + [f'--process_id={i}'], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
           for i in range(2)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  assert "mesh {'data': 8, 'model': 1, 'pipeline': 1} on 8 cpu devices" in outs[0]
  assert 'train step' not in outs[1]  # only process 0 prints
  multi, one = _losses(workdir), _losses(single)
  assert sorted(multi) == sorted(one) == list(range(1, 7))
  np.testing.assert_allclose([multi[s] for s in range(1, 7)], [one[s] for s in range(1, 7)],
                             rtol=parallel_test.RTOL)
  assert _complete_checkpoints(workdir) == [3, 6]


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_processes=2, process_id=1), r'need --coordinator_address'),
    (dict(coordinator_address='localhost:1234'), r'needs --num_processes and --process_id'),
    (dict(coordinator_address='localhost:1234', num_processes=2, process_id=2),
     r'--process_id=2 must be in \[0, --num_processes=2\)'),
])
def test_bad_distributed_flags(kwargs, match):
  with pytest.raises(ConfigError, match=match):
    distributed.initialize(**kwargs)


# --- Corrupt data --------------------------------------------------------------


def test_corrupt_tfds_records_are_reported(tmp_path, shakespeare_dir, tfds_dir):
  # Prepared in this session's TFDS folder (any test may run first, on any worker).
  list(data_lib.documents(_config(shakespeare_dir, tfds_dir).data, 'validation'))
  data_dir = tmp_path / 'tfds'
  shutil.copytree(tfds_dir, data_dir)
  [record] = data_dir.glob('tiny_shakespeare/*/tiny_shakespeare-validation.tfrecord*')
  raw = bytearray(record.read_bytes())
  raw[len(raw) // 2:len(raw) // 2 + 64] = b'\xff' * 64
  record.write_bytes(bytes(raw))
  cfg = _config(shakespeare_dir, str(data_dir))
  with pytest.raises(ConfigError, match=r'tiny_shakespeare \(validation\) .* is corrupt'):
    list(data_lib.documents(cfg.data, 'validation'))
