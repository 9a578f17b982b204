"""Language modelling: the weighted loss of packed rows, and data.pack's state."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlm import config as config_lib
from jaxlm import tasks
from jaxlm.config import ConfigError
from jaxlm.tasks import lm
from tests.configs import tiny_config


def _logits_and_targets(B=3, L=5, V=11):
  logits = jax.random.normal(jax.random.key(0), (B, L, V))
  targets = jax.random.randint(jax.random.key(1), (B, L), 0, V)
  return logits, targets


def test_cross_entropy_is_the_mean_token_nll():
  logits, targets = _logits_and_targets()
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  np.testing.assert_allclose(lm.token_cross_entropy(logits, targets), nll, rtol=1e-6)
  np.testing.assert_allclose(lm.cross_entropy(logits, targets), nll.mean(), rtol=1e-6)


def test_weighted_cross_entropy_averages_only_weighted_targets():
  logits, targets = _logits_and_targets()
  nll = lm.token_cross_entropy(logits, targets)
  weights = jnp.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], jnp.float32)
  np.testing.assert_allclose(lm.weighted_cross_entropy(logits, targets, weights),
                             nll[weights > 0].mean(), rtol=1e-6)
  np.testing.assert_allclose(lm.weighted_cross_entropy(logits, targets, jnp.ones((3, 5))),
                             lm.cross_entropy(logits, targets), rtol=1e-6)
  assert float(lm.weighted_cross_entropy(logits, targets, jnp.zeros((3, 5)))) == 0.0


def test_pack_passes_the_config_check_and_the_task_refuses_it_in_one_line(tmp_path):
  c = tiny_config()
  c = dataclasses.replace(c, data=dataclasses.replace(c.data, pack=True))
  config_lib.validate(c)  # no longer "not available": the model, loss and steps take it
  with pytest.raises(ConfigError, match=r'data\.pack=True: packed batches are not wired') as e:
    tasks.for_config(c).prepare(str(tmp_path / 'run'), False)
  assert '\n' not in str(e.value)
  assert not (tmp_path / 'run').exists()
