"""GPT model: shapes, causality, parameter layout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from jaxlm.model.gpt import GPT, count_params
from tests.configs import tiny_config


def _init(cfg, batch=2):
  model = GPT(cfg.model)
  tokens = jnp.zeros((batch, cfg.data.seq_len), jnp.int32)
  params = model.init(jax.random.PRNGKey(0), tokens)['params']
  return model, params


def test_logits_shape_and_dtype():
  cfg = tiny_config()
  model, params = _init(cfg)
  tokens = jnp.ones((3, 10), jnp.int32)
  logits = model.apply({'params': params}, tokens)
  assert logits.shape == (3, 10, cfg.model.vocab_size)
  assert logits.dtype == jnp.float32


def test_bfloat16_compute_keeps_float32_params():
  cfg = tiny_config(model__dtype='bfloat16')
  model, params = _init(cfg)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nn.meta.unbox(params)))
  logits = model.apply({'params': params}, jnp.ones((2, 8), jnp.int32))
  assert logits.dtype == jnp.bfloat16


def test_layers_are_stacked_on_a_leading_axis():
  cfg = tiny_config()
  _, params = _init(cfg)
  blocks = params['stack']['blocks']
  qkv = blocks['attn']['qkv']
  assert qkv.names == ('layers', None, 'embed', 'heads', 'kv')
  assert qkv.value.shape[0] == cfg.model.num_layers
  for leaf in jax.tree.leaves(blocks, is_leaf=lambda x: isinstance(x, nn.Partitioned)):
    assert leaf.names[0] == 'layers'


def test_parameter_count_matches_formula():
  cfg = tiny_config(model__use_bias=True, model__tie_embeddings=False)
  m = cfg.model
  _, params = _init(cfg)
  D, F, V, N = m.d_model, m.d_ff, m.vocab_size, m.num_layers
  per_block = 4 * D * D + 4 * D + 2 * D * F + F + D + 4 * D
  expected = N * per_block + 2 * V * D + m.max_len * D + 2 * D
  assert count_params(params) == expected


def test_untied_head_has_its_own_parameter():
  tied = _init(tiny_config())[1]
  untied = _init(tiny_config(model__tie_embeddings=False))[1]
  assert 'lm_head' not in tied and 'lm_head' in untied


@pytest.mark.parametrize('dropout', [0.0, 0.1])
def test_causality_through_gradients(dropout):
  """Logits at position t get no gradient from the position embeddings after t."""
  cfg = tiny_config(model__dropout=dropout)
  model, params = _init(cfg)
  params = nn.meta.unbox(params)
  L = cfg.data.seq_len
  tokens = jax.random.randint(jax.random.PRNGKey(1), (1, L), 0, cfg.model.vocab_size)

  def logits_at(wpe, t):
    p = dict(params, wpe=wpe)
    logits = model.apply({'params': p}, tokens, deterministic=dropout == 0.0,
                         rngs={'dropout': jax.random.PRNGKey(2)})
    return logits[0, t].sum()

  for t in (0, L // 2, L - 1):
    g = np.abs(np.asarray(jax.grad(logits_at)(params['wpe'], t)))  # [max_len, D]
    assert g[t + 1:].max(initial=0.0) == 0.0
    assert g[:t + 1].max() > 0.0


def test_logits_ignore_future_tokens():
  cfg = tiny_config()
  model, params = _init(cfg)
  a = jnp.arange(12, dtype=jnp.int32)[None] % cfg.model.vocab_size
  b = a.at[0, 8:].set(3)
  la = model.apply({'params': params}, a)
  lb = model.apply({'params': params}, b)
  np.testing.assert_array_equal(la[0, :8], lb[0, :8])
  assert not np.allclose(la[0, 8:], lb[0, 8:])
