"""Watching a run: profiler traces, param norm and memory in metrics.jsonl and TensorBoard."""

import glob
import gzip
import json
import math
import os
import re
import struct

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tensorboardX.proto import event_pb2

from jaxlm import config as config_lib, sample
from jaxlm.data import lm as data_lib
from jaxlm.training import health
from jaxlm.parallel import sharding
from jaxlm.training import steps as steps_lib
from jaxlm.training import loop as train
from jaxlm.training.checkpoint import Checkpointer
from jaxlm.experiments import load_configdict
from jaxlm.training.metrics import StepTrace, device_memory
from tests.configs import GPT_SMALL, tiny_config


def _config(shakespeare_dir, tfds_dir, **overrides):
  base = dict(data__manual_dir=shakespeare_dir, data__tfds_data_dir=tfds_dir,
              model__vocab_size=0, model__vocab_multiple=8, train__steps=6,
              train__log_every=2, train__eval_every=6, train__eval_steps=1,
              train__checkpoint_every=6, train__sample_tokens=0,
              profile__start_step=2, profile__num_steps=2)
  return tiny_config(**{**base, **overrides})


def _metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def _traces(workdir):
  return glob.glob(os.path.join(workdir, 'profile', 'plugins', 'profile', '*', '*.trace.json.gz'))


def _tensorboard_tags(workdir) -> set[str]:
  """Scalar tags in the run's event files (TFRecord framing of Event protos)."""
  tags = set()
  for path in glob.glob(os.path.join(workdir, 'tensorboard', 'events*')):
    with open(path, 'rb') as f:
      while header := f.read(12):  # uint64 length, uint32 CRC of the length
        (length,) = struct.unpack('<Q', header[:8])
        event = event_pb2.Event.FromString(f.read(length))
        f.read(4)  # CRC of the data
        tags.update(v.tag for v in event.summary.value)
  return tags


def _assert_no_trace_running(tmp_path):
  jax.profiler.start_trace(str(tmp_path / 'probe'))  # raises if one is still open
  jax.profiler.stop_trace()


def test_param_norm_is_that_of_the_returned_params_and_memory_is_read():
  cfg = tiny_config()
  mesh = sharding.make_mesh(cfg.parallel)
  with sharding.activate(mesh):
    s = steps_lib.build(cfg, mesh)
    tokens = jnp.ones((cfg.data.batch_size, cfg.data.seq_len), jnp.int32)
    state, metrics = s.train(s.init(), jax.device_put({'inputs': tokens, 'targets': tokens},
                                                      sharding.batch_sharding(mesh)))
  np.testing.assert_allclose(float(metrics['param_norm']), float(optax.tree.norm(state.params)),
                             rtol=1e-6)
  # Parameters and optimizer state are replicated: every device holds them all.
  state_bytes = sum(x.nbytes for x in jax.tree.leaves((state.params, state.opt_state)))
  assert device_memory()['memory_in_use_bytes'] >= state_bytes


def test_step_trace_covers_its_window(tmp_path, capsys):
  trace = StepTrace(config_lib.ProfileConfig(start_step=2, num_steps=2), str(tmp_path))
  x = jnp.zeros(())
  for step in range(6):
    trace.before(step, x)
    assert trace.active == (2 <= step < 4), step
    x = x + 1
    trace.after(step + 1, x)
  assert not trace.active and len(_traces(tmp_path)) == 1
  assert 'profile of steps 2..3 -> ' in capsys.readouterr().out
  # Resumed inside the window: the steps left are traced.
  trace = StepTrace(config_lib.ProfileConfig(start_step=2, num_steps=2), str(tmp_path / 'r'))
  trace.before(3, x)
  assert trace.active
  trace.stop()
  assert 'profile of steps 3..3 -> ' in capsys.readouterr().out
  _assert_no_trace_running(tmp_path)


@pytest.mark.slow
def test_a_run_leaves_a_trace_param_norm_and_memory(tmp_path, shakespeare_dir, tfds_dir,
                                                     capsys):
  cfg = _config(shakespeare_dir, tfds_dir)
  workdir = str(tmp_path / 'run')
  train.run(cfg, workdir)
  out = capsys.readouterr().out

  [trace] = _traces(workdir)
  assert glob.glob(os.path.join(workdir, 'profile', 'plugins', 'profile', '*', '*.xplane.pb'))
  with gzip.open(trace) as f:
    names = [e.get('name', '') for e in json.load(f)['traceEvents']]
  # The host's launch of each train step (PJRT's name for it): steps 2 and 3 alone.
  assert sum(bool(re.fullmatch(r'\S*Execute \(jit_train_step\)', n)) for n in names) == 2
  [line] = [x for x in out.splitlines() if x.startswith('profile of steps 2..3 -> ')]
  assert f'tensorboard --logdir {workdir}' in line and 'ui.perfetto.dev' in line

  rows = [r for r in _metrics(workdir) if 'loss' in r]
  assert [r['step'] for r in rows] == [2, 4, 6]
  for r in rows:
    assert math.isfinite(r['param_norm']) and r['param_norm'] > 0
    assert r['memory_in_use_bytes'] > 0
  assert '| param norm ' in out and '| mem ' in out

  # The logged norm is that of the parameters the run saved at its last step.
  cfg = sample.read_config(workdir)  # with the vocabulary size the tokenizer gave
  mesh = sharding.make_mesh(cfg.parallel)
  with sharding.activate(mesh):
    s = steps_lib.build(cfg, mesh)
    ckpt = Checkpointer(workdir, keep=1, every=6)
    step, state = ckpt.restore_latest(s.abstract_state)
    ckpt.close()
  assert step == 6
  np.testing.assert_allclose(rows[-1]['param_norm'], float(optax.tree.norm(state.params)),
                             rtol=1e-5)

  tags = _tensorboard_tags(workdir)
  assert {'param_norm', 'memory_in_use_bytes', 'loss', 'grad_norm'} <= tags


def test_the_trace_is_closed_when_a_stop_signal_ends_the_run(tmp_path, shakespeare_dir,
                                                             tfds_dir, monkeypatch, capsys):
  asked = []
  def requested(self):  # a SIGTERM during step 2 (0-based), the first traced one
    asked.append(1)
    return len(asked) >= 3
  monkeypatch.setattr(health.StopRequest, 'requested', requested)
  workdir = str(tmp_path / 'run')
  result = train.run(_config(shakespeare_dir, tfds_dir, profile__num_steps=3), workdir)
  assert result['stopped'] and result['step'] == 3
  assert len(_traces(workdir)) == 1
  assert 'profile of steps 2..2 -> ' in capsys.readouterr().out
  _assert_no_trace_running(tmp_path)


def test_the_trace_is_closed_when_a_nonfinite_step_halts_the_run(tmp_path, shakespeare_dir,
                                                                 tfds_dir, monkeypatch, capsys):
  batch_fn = data_lib.train_batch
  def poisoned(tokens, step, **kwargs):  # step 2's loss is NaN
    batch = batch_fn(tokens, step, **kwargs)
    if step == 2:
      batch = {k: v.copy() for k, v in batch.items()}
      batch['inputs'][0, 0] = 1000  # out of the vocabulary: the embedding gives NaN
    return batch
  monkeypatch.setattr(data_lib, 'train_batch', poisoned)
  workdir = str(tmp_path / 'run')
  with pytest.raises(health.NonFiniteHalt):  # seen one step late, inside the window
    train.run(_config(shakespeare_dir, tfds_dir, train__on_nonfinite='halt',
                      profile__num_steps=4), workdir)
  assert len(_traces(workdir)) == 1
  assert 'profile of steps 2..3 -> ' in capsys.readouterr().out
  _assert_no_trace_running(tmp_path)


@pytest.mark.parametrize('override, match', [
    ({'profile.start_step': -1}, r'^profile\.start_step=-1 must be >= 0'),
    ({'profile.num_steps': -2}, r'^profile\.num_steps=-2 must be >= 0 \(0 turns profiling off\)$'),
    ({'profile.start_step': 1998, 'profile.num_steps': 5},
     r'^profile\.start_step=1998 \+ profile\.num_steps=5 runs past train\.steps=2000;'),
])
def test_bad_profile_settings(override, match):
  with pytest.raises(config_lib.ConfigError, match=match) as e:
    config_lib.from_configdict(load_configdict(GPT_SMALL, override))
  assert '\n' not in str(e.value)


def test_profile_settings_never_block_a_resume_or_an_old_run_folder(tmp_path):
  cfg = tiny_config()
  assert cfg.profile == config_lib.ProfileConfig(start_step=10, num_steps=0)
  traced = tiny_config(profile__start_step=3, profile__num_steps=4)
  ckpt = Checkpointer(str(tmp_path), keep=1, every=1)
  ckpt.save(1, {'w': jnp.zeros(3)}, config_lib.to_dict(cfg))  # only its config matters
  ckpt.wait()
  ckpt.check_compatible(config_lib.to_dict(traced))
  ckpt.close()

  # A run folder from before profiling existed: no profile section reads as off.
  old = config_lib.to_dict(cfg)
  del old['profile']
  (tmp_path / 'config.json').write_text(json.dumps(old))
  assert sample.read_config(str(tmp_path)).profile == config_lib.PROFILE_OFF
