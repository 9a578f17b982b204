"""The optimizer: weight decay on every matmul kernel and nothing else; epsilon and betas."""

import jax
import numpy as np
import pytest

from jaxlm.config import ConfigError
from jaxlm.model.gpt import GPT
from jaxlm.parallel import sharding
from jaxlm.training import optim, steps
from tests.configs import LLAMA_BLOCKS, tiny_config

LLAMA = dict(**LLAMA_BLOCKS,
             model__num_kv_heads=2, model__qkv_bias=True, model__tie_embeddings=False)


@pytest.mark.parametrize('overrides', [{'model__use_bias': True}, LLAMA], ids=['gpt2', 'llama'])
def test_every_matmul_kernel_decays_and_nothing_else(overrides):
  c = tiny_config(**overrides)
  params = sharding.unbox_shapes(steps.abstract_params(GPT(c.model), c.data.seq_len))
  mask = optim.decay_mask(params)
  for path, decays in jax.tree_util.tree_flatten_with_path(mask)[0]:
    name = path[-1].key
    leaf = jax.tree_util.tree_flatten_with_path(params)[0]
    shape = dict((jax.tree_util.keystr(p), x.shape) for p, x in leaf)[jax.tree_util.keystr(path)]
    # A kernel: a matrix per layer (rank 3 with the layers axis), or the untied head.
    kernel = (len(shape) >= 3 or name == 'lm_head') and 'bias' not in name
    assert decays == kernel, (jax.tree_util.keystr(path), shape)


def test_epsilon_reaches_adamw():
  # No warmup: the first step uses the peak rate. Bias-corrected, Adam's first
  # update is -lr * g / (|g| + eps); with |g| = 1e-6, eps decides its size.
  for eps in (1e-8, 1e-5):
    c = tiny_config(train__adam_eps=eps, train__warmup_steps=0, train__beta2=0.95)
    tx = optim.make_optimizer(c.train)
    g = {'w': np.full((2,), 1e-6, np.float32)}  # 'w': not a decayed kernel
    updates, _ = tx.update(g, tx.init(g), g)
    expected = -c.train.learning_rate * 1e-6 / (1e-6 + eps)
    np.testing.assert_allclose(updates['w'], expected, rtol=1e-5)


@pytest.mark.parametrize('overrides, match', [
    ({'train__adam_eps': 0.0}, r'train\.adam_eps=0\.0 must be > 0'),
    ({'train__beta2': 1.0}, r'train\.beta2=1\.0 must be in \[0, 1\)'),
])
def test_bad_optimizer_settings_are_named(overrides, match):
  with pytest.raises(ConfigError, match=match):
    tiny_config(**overrides)
