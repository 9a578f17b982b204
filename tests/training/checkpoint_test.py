"""Checkpoints: round trip, config check, never overwrite."""

import jax
import numpy as np
import pytest

from jaxlm.parallel import sharding
from jaxlm.training import steps as steps_lib
from jaxlm.training.checkpoint import Checkpointer
from jaxlm.config import ConfigError, to_dict
from tests.configs import tiny_config


def _state(cfg, devices):
  mesh = sharding.make_mesh(cfg.parallel, devices)
  s = steps_lib.build(cfg, mesh)
  return s, s.init()


def test_round_trip_onto_another_device_count(tmp_path):
  cfg = tiny_config()
  _, state = _state(cfg, jax.devices())
  ckpt = Checkpointer(str(tmp_path), keep=2, every=1)
  assert ckpt.save(3, state, to_dict(cfg))
  ckpt.wait()
  # Restore onto one device: the abstract state carries the target shardings.
  s1, _ = _state(cfg, jax.devices()[:1])
  restored = Checkpointer(str(tmp_path), keep=2, every=1).restore(3, s1.abstract_state)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state), jax.device_get(restored))
  leaf = jax.tree.leaves(restored.params)[0]
  assert leaf.sharding.mesh.size == 1


def test_keeps_the_last_k_and_never_overwrites(tmp_path):
  cfg = tiny_config()
  _, state = _state(cfg, jax.devices())
  ckpt = Checkpointer(str(tmp_path), keep=2, every=2)
  assert not ckpt.save(1, state, to_dict(cfg))  # not a multiple of every
  for step in (2, 4, 6):
    assert ckpt.save(step, state, to_dict(cfg))
  assert not ckpt.save(6, state, to_dict(cfg), force=True)  # exists: untouched
  ckpt.wait()
  assert ckpt.latest_step() == 6
  assert sorted(ckpt._manager.all_steps()) == [4, 6]


def test_a_different_model_in_the_folder_is_refused(tmp_path):
  cfg = tiny_config()
  _, state = _state(cfg, jax.devices())
  ckpt = Checkpointer(str(tmp_path), keep=2, every=1)
  ckpt.save(1, state, to_dict(cfg))
  ckpt.wait()
  ckpt.check_compatible(to_dict(cfg))  # same model: fine
  other = to_dict(tiny_config(model__d_model=64))
  with pytest.raises(ConfigError, match=r'model\.d_model=32 there, 64 now'):
    ckpt.check_compatible(other)
  assert ckpt.latest_step() == 1  # nothing was removed
