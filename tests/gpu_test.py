"""Checks that need a GPU: skipped elsewhere (CI has none).

On a GPU, bf16 training attention runs cuDNN's fused kernel
(jax.nn.dot_product_attention, implementation='cudnn'); it must compute what
the einsum path computes, forward and backward.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm.model import gpt as model_lib
from jaxlm.config import ModelConfig

pytestmark = pytest.mark.skipif(jax.default_backend() != 'gpu', reason='needs a GPU')


def _cfg(attention: str) -> ModelConfig:
  return ModelConfig(num_layers=2, num_heads=4, d_model=256, d_ff=1024, max_len=256,
                     dropout=0.0, dtype='bfloat16', vocab_size=512, vocab_multiple=1,
                     tie_embeddings=True, use_bias=True, attention=attention)


def _loss_and_grads(attention: str):
  cfg = _cfg(attention)
  model = model_lib.GPT(cfg)
  tokens = jax.random.randint(jax.random.key(1), (4, 257), 0, cfg.vocab_size)
  params = model.init(jax.random.key(0), tokens[:, :-1])["params"]

  def loss(p):
    logits = model.apply({'params': p}, tokens[:, :-1]).astype(jnp.float32)
    return -jnp.mean(jnp.take_along_axis(
        jax.nn.log_softmax(logits), tokens[:, 1:, None], axis=-1))

  f = jax.jit(jax.value_and_grad(loss))
  text = f.lower(params).as_text()
  value, grads = f(params)
  return float(value), grads, text


def test_cudnn_attention_matches_einsums():
  fused, fused_grads, fused_text = _loss_and_grads('auto')
  plain, plain_grads, plain_text = _loss_and_grads('xla')
  assert 'cudnn' in fused_text.lower() or 'custom_call' in fused_text
  assert 'cudnn' not in plain_text.lower()
  # bf16 compute: both paths round differently; loss within 0.5%, grads within
  # 2% of each tensor's largest entry.
  np.testing.assert_allclose(fused, plain, rtol=5e-3)
  for a, b in zip(jax.tree.leaves(fused_grads), jax.tree.leaves(plain_grads)):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    assert np.max(np.abs(a - b)) <= 2e-2 * np.max(np.abs(b)) + 1e-6


def test_packed_rows_run_the_einsums_and_match_them():
  # With segment ids the fused kernel is skipped (gpt._fused_attention says why):
  # 'auto' lowers without a cuDNN call and computes what 'xla' computes.
  segment_ids = jnp.repeat(jnp.array([[1, 2, 3, 0]]), 64, axis=1).repeat(4, axis=0)
  positions = jnp.tile(jnp.arange(64), (4, 4))
  tokens = jax.random.randint(jax.random.key(1), (4, 256), 0, 512)
  out = {}
  for attention in ('auto', 'xla'):
    model = model_lib.GPT(_cfg(attention))
    params = model.init(jax.random.key(0), tokens)['params']
    f = jax.jit(lambda p: model.apply({'params': p}, tokens, segment_ids_BL=segment_ids,
                                      positions_BL=positions))
    assert 'cudnn' not in f.lower(params).as_text().lower()
    out[attention] = np.asarray(f(params), np.float32)
  np.testing.assert_array_equal(out['auto'], out['xla'])
