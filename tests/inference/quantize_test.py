"""int8 weight-only quantization: error bounds, the same model code, memory, sharding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from jaxlm.inference import generate
from jaxlm.inference import quantize
from jaxlm.parallel import sharding
from jaxlm.training import steps as steps_lib
from jaxlm.model.gpt import GPT
from jaxlm.inference.quantize import QArray
from tests.configs import LLAMA_BLOCKS, tiny_config


def _setup(**overrides):
  cfg = tiny_config(**overrides)
  model = GPT(cfg.model)
  init = jax.jit(model.init)
  params = nn.meta.unbox(init(jax.random.PRNGKey(0), jnp.zeros((1, 16), jnp.int32))['params'])
  return cfg, model, params


def _quantized_leaves(params, qparams):
  """(name, float32 weight, QArray) for every quantized weight."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  qflat = jax.tree.leaves(qparams, is_leaf=lambda x: isinstance(x, QArray))
  return [(jax.tree_util.keystr(path), w, qw) for (path, w), qw in zip(flat, qflat)
          if isinstance(qw, QArray)]


UNTIED = {'model__tie_embeddings': False, 'model__use_bias': True}
LLAMA = {**LLAMA_BLOCKS,
         'model__num_kv_heads': 2, 'model__tie_embeddings': False}


@pytest.mark.parametrize('overrides', [{}, UNTIED, LLAMA])
def test_each_weight_is_within_half_a_step_and_each_matmul_within_its_bound(overrides):
  _, _, params = _setup(**overrides)
  qparams = quantize.quantize(params)
  leaves = _quantized_leaves(params, qparams)
  names = {name.split("'")[-2] for name, _, _ in leaves}
  attention = {'q', 'kv'} if overrides.get('model__num_kv_heads') else {'qkv'}
  mlp = {'gate', 'up', 'down'} if overrides.get('model__mlp') == 'swiglu' else {'up', 'down'}
  assert names == attention | mlp | {'out', 'wte'} | ({'lm_head'} if overrides else set())
  for name, w, qw in leaves:
    w, q, s = np.asarray(w), np.asarray(qw.q), np.asarray(qw.scale)
    assert qw.q.dtype == jnp.int8 and q.shape == w.shape, name
    assert np.abs(q).max() == 127, name  # the largest weight of a channel maps to +-127
    error = np.abs(q * s - w)
    assert (error <= s / 2 * (1 + 1e-6)).all(), name
    # A matmul contracting these axes is off by at most sum|x| * s / 2 per output.
    axes = quantize.CONTRACTED[name.split("'")[-2]]
    x = np.random.default_rng(0).normal(size=w.shape)
    bound = np.sum(np.abs(x) * s / 2, axis=axes)
    assert (np.abs(np.sum(x * (q * s - w), axis=axes)) <= bound * (1 + 1e-6)).all(), name


@pytest.mark.parametrize('overrides', [{}, UNTIED, LLAMA])
def test_int8_model_is_the_dequantized_model_and_close_to_float32(overrides):
  """Same code path; the logits move by under 1% of their largest magnitude.

  Why 1%: every weight is within half a step, 1/254 of its channel's largest
  weight (tested above), so each matmul output moves by at most 0.4% of
  sum|x| * max|w|, and errors of different signs partly cancel; LayerNorm
  rescales between the 2 blocks, so they do not compound. At init this model
  moves by 0.46%. SwiGLU multiplies two quantized projections, gate and up:
  (g + dg)(u + du) = gu + g du + u dg, so the MLP's relative error doubles,
  and so does the bound (the Llama blocks here move by 1.1%).
  """
  _, model, params = _setup(**overrides)
  qparams = quantize.quantize(params)
  tokens = jax.random.randint(jax.random.PRNGKey(1), (4, 16), 0, 64)
  apply = jax.jit(lambda p, t: model.apply({'params': p}, t))
  fp32, int8 = apply(params, tokens), apply(qparams, tokens)
  np.testing.assert_allclose(int8, apply(quantize.dequantize(qparams), tokens),
                             rtol=1e-6, atol=1e-6)
  bound = 0.02 if overrides.get('model__mlp') == 'swiglu' else 0.01
  assert np.abs(int8 - fp32).max() <= bound * np.abs(fp32).max()
  assert not np.array_equal(int8, fp32)  # it is quantized


def test_parameter_memory_counts_int8_values_and_scales():
  cfg, _, params = _setup()
  m = cfg.model
  qparams = quantize.quantize(params)
  N, D, F, V, H = m.num_layers, m.d_model, m.d_ff, m.vocab_size, m.num_heads
  K = m.head_dim
  matmul = N * (3 * D * H * K + H * K * D + 2 * D * F) + V * D  # 1 byte each
  scales = N * (3 * H * K + D + F + D) + V  # one float32 per output channel
  others = m.max_len * D + 2 * N * D + D  # wpe, norm scales: float32
  assert quantize.nbytes(params) == 4 * (matmul + others)
  assert quantize.nbytes(qparams) == matmul + 4 * (scales + others)


def test_int8_generation_on_a_data_model_mesh_equals_one_device():
  _, model, params = _setup()
  prompts = [[5, 9, 2], [7, 1, 3, 3, 8, 12]]
  one = generate.generate(quantize.quantize(params), model, prompts, 6)
  mesh = sharding.make_mesh(tiny_config(parallel__data=2, parallel__model=4).parallel)
  with sharding.activate(mesh):
    shardings = sharding.mesh_shardings(steps_lib.abstract_params(model, 16), mesh)
    qparams = quantize.quantize(jax.device_put(params, shardings))
    qkv = qparams['stack']['blocks']['attn']['qkv']
    assert len(qkv.q.sharding.device_set) == 8
    assert quantize.nbytes(qparams) < quantize.nbytes(params) / 2
    assert generate.generate(qparams, model, prompts, 6) == one
