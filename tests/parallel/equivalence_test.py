"""Every layout computes what one device computes: loss and gradients."""

import functools

import jax
import numpy as np
import pytest

from jaxlm.parallel import sharding
from jaxlm.training import steps as steps_lib
from tests.configs import LLAMA_BLOCKS, tiny_config

RTOL, ATOL = 1e-5, 1e-6  # float32; reduction order differs across layouts


def _batches(cfg, n):
  rng = np.random.default_rng(0)
  shape = (cfg.data.batch_size, cfg.data.seq_len + 1)
  out = []
  for _ in range(n):
    tokens = rng.integers(0, cfg.model.vocab_size, shape, dtype=np.int32)
    out.append({'inputs': tokens[:, :-1], 'targets': tokens[:, 1:]})
  return out


def _run(cfg, devices, batches):
  """Gradients at init, then losses and params after len(batches) steps."""
  mesh = sharding.make_mesh(cfg.parallel, devices)
  with sharding.activate(mesh):
    s = steps_lib.build(cfg, mesh)
    state = s.init()
    batch_sh = sharding.batch_sharding(mesh)
    put = lambda b: jax.device_put(b, batch_sh)
    grad_fn = jax.jit(functools.partial(
        steps_lib.loss_and_grads, objective=s.objective, accum=cfg.train.grad_accum_steps))
    _, _, grads = grad_fn(state.params, put(batches[0]), state.rng)
    grads = jax.device_get(s.to_canonical(grads))
    losses = []
    for b in batches:
      state, metrics = s.train(state, put(b))
      losses.append(float(metrics['loss']))
    return grads, losses, jax.device_get(s.to_canonical(state.params))


def _assert_trees_close(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=RTOL, atol=ATOL), a, b)


@pytest.mark.parametrize('overrides', [
    {},
    {'model__dropout': 0.1},
    {'train__grad_accum_steps': 2},
])
def test_data_parallel_equals_one_device(overrides):
  cfg = tiny_config(**overrides)
  b0, b1 = _batches(cfg, 2)
  batches = [b0, b1, b0]
  one = _run(cfg, jax.devices()[:1], batches)
  eight = _run(cfg, jax.devices(), batches)
  _assert_trees_close(one[0], eight[0])
  np.testing.assert_allclose(one[1], eight[1], rtol=RTOL, atol=ATOL)
  _assert_trees_close(one[2], eight[2])
  assert one[1][2] < one[1][0]  # it learns: b0's loss fell


def test_grad_accumulation_equals_full_batch():
  cfg = tiny_config(data__batch_size=32)
  batches = _batches(cfg, 2)
  full = _run(cfg, jax.devices(), batches)
  accum = _run(tiny_config(train__grad_accum_steps=4, data__batch_size=32), jax.devices(), batches)
  _assert_trees_close(full[0], accum[0])
  np.testing.assert_allclose(full[1], accum[1], rtol=RTOL, atol=ATOL)
  _assert_trees_close(full[2], accum[2])


LAYOUTS = [(8, 1), (4, 2), (2, 4), (1, 8)]
# ZeRO shards over `data`: on a data axis of 1 every stage is stage 0, so (1, 8) runs once.
TP_ZERO = [(d, m, z) for d, m in LAYOUTS for z in ((0, 1, 3) if d > 1 else (0,))] + [(4, 2, 2)]


def _tp_config(data=-1, model=1, zero=0):
  # 8 heads, d_ff 64 and vocab 64 divide every model axis; d_model 32 every data axis.
  return tiny_config(model__num_heads=8, parallel__data=data, parallel__model=model,
                     parallel__zero_stage=zero)


def reference(cfg):
  """Two batches and what one device computes on them (gradients, losses, params)."""
  batches = _batches(cfg, 2)
  return batches, _run(cfg, jax.devices()[:1], batches)


@pytest.fixture(scope='module')
def one_device_reference():
  return reference(_tp_config())


@pytest.mark.parametrize('data, model, zero', TP_ZERO,
                         ids=[f'data{d}-model{m}-zero{z}' for d, m, z in TP_ZERO])
def test_tensor_parallel_and_zero_equal_one_device(one_device_reference, data, model, zero):
  batches, reference = one_device_reference
  cfg = _tp_config(data, model, zero)
  result = _run(cfg, jax.devices(), batches)
  _assert_trees_close(reference[0], result[0])
  np.testing.assert_allclose(reference[1], result[1], rtol=RTOL, atol=ATOL)
  _assert_trees_close(reference[2], result[2])


# Llama's blocks with grouped-query attention: 8 query heads, 2 key/value heads.
LLAMA = dict(**LLAMA_BLOCKS,
             model__num_kv_heads=2, model__num_heads=8, model__qkv_bias=True)
# Every ZeRO stage on a data axis > 1; model 4 and 8: the 2 kv heads replicated.
GQA_LAYOUTS = [(8, 1, 3), (4, 2, 2), (2, 4, 1), (1, 8, 0)]


@pytest.fixture(scope='module')
def gqa_reference():
  return reference(tiny_config(**LLAMA))


@pytest.mark.parametrize('data, model, zero', GQA_LAYOUTS,
                         ids=[f'data{d}-model{m}-zero{z}' for d, m, z in GQA_LAYOUTS])
def test_grouped_query_llama_blocks_equal_one_device(gqa_reference, data, model, zero):
  batches, reference = gqa_reference
  cfg = tiny_config(**LLAMA, parallel__data=data, parallel__model=model,
                    parallel__zero_stage=zero)
  result = _run(cfg, jax.devices(), batches)
  _assert_trees_close(reference[0], result[0])
  np.testing.assert_allclose(reference[1], result[1], rtol=RTOL, atol=ATOL)
  _assert_trees_close(reference[2], result[2])


@pytest.mark.parametrize('remat', ['full', 'matmuls'])
def test_remat_changes_nothing_but_memory(one_device_reference, remat):
  batches, reference = one_device_reference
  cfg = tiny_config(model__num_heads=8, parallel__remat=remat, parallel__model=2)
  result = _run(cfg, jax.devices(), batches)
  _assert_trees_close(reference[0], result[0])
  np.testing.assert_allclose(reference[1], result[1], rtol=RTOL, atol=ATOL)
