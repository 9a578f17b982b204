"""FLOPs accounting."""

import jax
import jax.numpy as jnp

from jaxlm.training import flops
from jaxlm.model.gpt import GPT, count_params
from tests.configs import LLAMA_BLOCKS, tiny_config


def test_non_embedding_params_match_the_model():
  llama = LLAMA_BLOCKS
  for overrides in ({}, {'model__use_bias': True}, {'model__tie_embeddings': False}, llama,
                    {**llama, 'model__num_kv_heads': 1, 'model__qkv_bias': True},
                    {**llama, 'model__num_kv_heads': 2, 'model__head_size': 8,
                     'model__use_bias': True}):
    cfg = tiny_config(**overrides)
    params = jax.eval_shape(GPT(cfg.model).init, jax.random.PRNGKey(0),
                            jnp.zeros((1, 8), jnp.int32))['params']
    wpe = cfg.model.max_len * cfg.model.d_model if 'wpe' in params else 0
    assert flops.non_embedding_params(cfg.model) == count_params(params) - wpe, overrides


def test_flops_per_token_formula():
  m = tiny_config().model
  n = flops.non_embedding_params(m)
  assert flops.flops_per_token(m, 16) == 6 * n + 12 * m.num_layers * 16 * m.d_model


def test_measured_peak_is_positive():
  assert flops.measure_matmul_peak(n=256, reps=2) > 1e6
