"""Packed batches: every layout, accumulation and the pipeline compute what one device computes."""

import jax
import numpy as np
import pytest

from jaxlm.data import packing
from tests.configs import LLAMA_BLOCKS, tiny_config
from tests.parallel import equivalence_test as parallel_test
from tests.parallel import pipeline_test


def _packed_batches(cfg, n):
  """n packed batches of random documents, long ones (cut into chunks) among them."""
  rng = np.random.default_rng(0)
  L, B = cfg.data.seq_len, cfg.data.batch_size
  sizes = rng.integers(2, 3 * L, 200)
  offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
  tokens = rng.integers(0, cfg.model.vocab_size, offsets[-1]).astype(np.int32)
  return [packing.packed_train_batch(tokens, offsets, step, batch_size=B, seq_len=L, seed=0)
          for step in range(n)]


def _assert_runs_equal(a, b):
  parallel_test._assert_trees_close(a[0], b[0])  # gradients
  np.testing.assert_allclose(a[1], b[1], rtol=parallel_test.RTOL, atol=parallel_test.ATOL)
  parallel_test._assert_trees_close(a[2], b[2])  # updated params


MODELS = {'gpt2': {}, 'llama-gqa': dict(**LLAMA_BLOCKS, model__num_kv_heads=2)}


@pytest.mark.parametrize('name', MODELS)
def test_packed_batches_on_data_and_model_axes_equal_one_device(name):
  cfg = tiny_config(**MODELS[name])
  batches = _packed_batches(cfg, 2)
  one = parallel_test._run(cfg, jax.devices()[:1], batches)
  mesh_cfg = tiny_config(**MODELS[name], parallel__data=2, parallel__model=2)
  _assert_runs_equal(one, parallel_test._run(mesh_cfg, jax.devices()[:4], batches))
  assert one[1][1] != one[1][0]


def test_packed_accumulation_weighs_microbatches_by_their_targets():
  cfg = tiny_config()
  batches = _packed_batches(cfg, 2)
  full = parallel_test._run(cfg, jax.devices()[:1], batches)
  accum = parallel_test._run(tiny_config(train__grad_accum_steps=2), jax.devices()[:1], batches)
  _assert_runs_equal(full, accum)
  # Microbatch a takes rows a, a+2, ...: their target counts differ, so a plain
  # mean of the two microbatch losses would not be the batch's loss.
  w = batches[0]['weights']
  assert w[0::2].sum() != w[1::2].sum()


@pytest.fixture(scope='module')
def pipeline_reference():
  cfg = pipeline_test._config()
  batches = _packed_batches(cfg, 2)
  return batches, parallel_test._run(cfg, jax.devices()[:1], batches)


# (data, model, pipeline), microbatches, repeats: GPipe on the pipeline alone;
# circular across data and model, with accumulation on top.
PIPELINES = [((1, 1, 2), 2, 1, {}), ((2, 2, 2), 2, 2, {'train__grad_accum_steps': 2})]


@pytest.mark.slow
@pytest.mark.parametrize('mesh, microbatches, repeats, overrides', PIPELINES,
                         ids=['1x1x2-M2-gpipe', '2x2x2-M2-circular2-accum2'])
def test_packed_batches_through_the_pipeline_equal_one_device(pipeline_reference, mesh,
                                                              microbatches, repeats, overrides):
  batches, reference = pipeline_reference
  data, model, stages = mesh
  cfg = pipeline_test._config(data, model, stages, microbatches, repeats, **overrides)
  _assert_runs_equal(reference,
                     parallel_test._run(cfg, jax.devices()[:data * model * stages], batches))
