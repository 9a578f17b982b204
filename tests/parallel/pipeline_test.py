"""Pipeline parallelism computes what one device computes, in every 3-D layout."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from jaxlm.parallel import pipeline
from jaxlm.parallel import sharding
from jaxlm.training import steps as steps_lib
from jaxlm.training import loop as train
from jaxlm.config import ConfigError
from tests.parallel import equivalence_test as parallel_test
from tests.configs import tiny_config

LAYERS = 8


def _config(data=1, model=1, stages=1, microbatches=1, repeats=1, zero=0, **overrides):
  return tiny_config(
      model__num_layers=LAYERS, parallel__data=data, parallel__model=model,
      parallel__pipeline=stages, parallel__microbatches=microbatches,
      parallel__pipeline_repeats=repeats, parallel__zero_stage=zero,
      parallel__pipeline_schedule='circular' if repeats > 1 else 'gpipe', **overrides)


@pytest.fixture(scope='module')
def one_device_reference():
  return parallel_test.reference(_config())


# (data, model, pipeline), microbatches, repeats (1: GPipe, >1: circular), ZeRO stage
# Each row adds a case the others miss: one microbatch; the deepest GPipe;
# circular on pipeline alone, with data (and ZeRO 1), with data and model (and
# ZeRO 3), and with model alone; GPipe across data and model.
LAYOUTS = [
    ((1, 1, 2), 1, 1, 0),
    ((1, 1, 8), 8, 1, 0),
    ((1, 1, 4), 4, 2, 0),
    ((2, 1, 4), 4, 2, 1),
    ((2, 2, 2), 2, 1, 0),
    ((2, 2, 2), 4, 2, 3),
    ((1, 2, 4), 8, 2, 0),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    'mesh, microbatches, repeats, zero', LAYOUTS,
    ids=[f'{"x".join(map(str, m))}-M{mb}-{"gpipe" if r == 1 else f"circular{r}"}-zero{z}'
         for m, mb, r, z in LAYOUTS])
def test_pipeline_equals_one_device(one_device_reference, mesh, microbatches, repeats, zero):
  batches, reference = one_device_reference
  data, model, stages = mesh
  cfg = _config(data, model, stages, microbatches, repeats, zero)
  result = parallel_test._run(cfg, jax.devices()[:data * model * stages], batches)
  parallel_test._assert_trees_close(reference[0], result[0])  # gradients
  np.testing.assert_allclose(reference[1], result[1],
                             rtol=parallel_test.RTOL, atol=parallel_test.ATOL)
  parallel_test._assert_trees_close(reference[2], result[2])  # updated params


@pytest.fixture(scope='module')
def gqa_reference():
  return parallel_test.reference(_config(**parallel_test.LLAMA))


@pytest.mark.slow
@pytest.mark.parametrize('mesh, microbatches, repeats, zero', [((1, 1, 4), 4, 1, 0),
                                                               ((2, 2, 2), 4, 2, 3)])
def test_pipeline_of_grouped_query_llama_blocks_equals_one_device(gqa_reference, mesh,
                                                                  microbatches, repeats, zero):
  llama = parallel_test.LLAMA
  batches, reference = gqa_reference
  data, model, stages = mesh
  result = parallel_test._run(_config(data, model, stages, microbatches, repeats, zero, **llama),
                              jax.devices()[:data * model * stages], batches)
  parallel_test._assert_trees_close(reference[0], result[0])
  np.testing.assert_allclose(reference[1], result[1],
                             rtol=parallel_test.RTOL, atol=parallel_test.ATOL)
  parallel_test._assert_trees_close(reference[2], result[2])


@pytest.mark.slow
def test_pipeline_with_accumulation_and_remat(one_device_reference):
  batches, reference = one_device_reference
  cfg = _config(2, 1, 4, microbatches=4, repeats=2, train__grad_accum_steps=2,
                parallel__remat='full')
  result = parallel_test._run(cfg, jax.devices(), batches)
  parallel_test._assert_trees_close(reference[0], result[0])
  np.testing.assert_allclose(reference[1], result[1],
                             rtol=parallel_test.RTOL, atol=parallel_test.ATOL)


def test_each_stage_runs_only_its_layers():
  # Per-device FLOPs of the compiled step: 4 stages with 4 microbatches run
  # M + P - 1 = 7 ticks of 2 of the 8 layers on a quarter of the batch.
  flops = {}
  for stages in (1, 4):
    cfg = _config(stages=stages, microbatches=stages, model__d_model=64)
    mesh = sharding.make_mesh(cfg.parallel, jax.devices()[:stages])
    with sharding.activate(mesh):
      s = steps_lib.build(cfg, mesh)
      batch = jax.ShapeDtypeStruct((16, 16), np.int32, sharding=sharding.batch_sharding(mesh))
      compiled = s.train.lower(s.abstract_state, {'inputs': batch, 'targets': batch}).compile()
      flops[stages] = compiled.cost_analysis()['flops']
      if stages > 1:
        assert 'collective-permute' in compiled.as_text()
  # Blocks are most of the FLOPs; 7/16 of their work plus the replicated head.
  assert flops[4] < 0.5 * flops[1], flops


def test_bubble_fractions():
  gpipe = pipeline.Spec(stages=4, repeats=1, microbatches=8)
  circular = pipeline.Spec(stages=4, repeats=2, microbatches=8)
  assert gpipe.bubble == pytest.approx(3 / 11)
  assert circular.bubble == pytest.approx(3 / 19)
  assert pipeline.Spec(stages=1, repeats=1, microbatches=1).bubble == 0


def test_layer_order_gives_each_stage_its_chunks():
  spec = pipeline.Spec(stages=2, repeats=2, microbatches=2)
  order = pipeline.layer_order(8, spec)
  # Stage 0 holds chunks 0 and 2 (layers 0,1 and 4,5); stage 1 chunks 1 and 3.
  np.testing.assert_array_equal(order, [0, 1, 4, 5, 2, 3, 6, 7])
  np.testing.assert_array_equal(
      pipeline.layer_order(8, pipeline.Spec(4, 1, 4)), np.arange(8))
  tree = {'stack': {'blocks': {'w': np.arange(8.0)}}, 'wte': np.arange(3.0)}
  staged = pipeline.to_stage_order(tree, 8, spec)
  np.testing.assert_array_equal(staged['stack']['blocks']['w'], order)
  np.testing.assert_array_equal(staged['wte'], tree['wte'])
  back = pipeline.to_canonical(staged, 8, spec)
  np.testing.assert_array_equal(back['stack']['blocks']['w'], np.arange(8.0))


@pytest.mark.parametrize('overrides, match', [
    ({'parallel__pipeline': 3}, r'model\.num_layers=8 does not split into parallel\.pipeline=3'),
    ({'parallel__pipeline': 4, 'parallel__pipeline_repeats': 4,
      'parallel__pipeline_schedule': 'circular', 'parallel__microbatches': 4},
     r'does not split into parallel\.pipeline=4 stages x parallel\.pipeline_repeats=4'),
    ({'parallel__pipeline': 2, 'parallel__microbatches': 3},
     r'parallel\.microbatches=3 does not divide the batch of 16 rows'),
    ({'parallel__pipeline': 4, 'parallel__microbatches': 2, 'parallel__pipeline_repeats': 2,
      'parallel__pipeline_schedule': 'circular'},
     r'parallel\.microbatches=2 is fewer than the 4 stages'),
    ({'parallel__pipeline_repeats': 2},
     r'parallel\.pipeline_repeats=2 needs parallel\.pipeline_schedule=circular'),
    ({'parallel__pipeline_schedule': 'zigzag'},
     r"parallel\.pipeline_schedule='zigzag' is not one of: gpipe, circular"),
])
def test_bad_pipeline_settings_are_named(overrides, match):
  with pytest.raises(ConfigError, match=match):
    tiny_config(model__num_layers=LAYERS, **overrides)


def test_microbatch_not_divisible_by_data_axis():
  # 16 rows / 4 microbatches = 4 rows, over a data axis of 8 / 2 = 4: fine;
  # 16 / 8 microbatches = 2 rows over 4: not.
  cfg = tiny_config(model__num_layers=LAYERS, parallel__pipeline=2, parallel__microbatches=8)
  mesh = sharding.make_mesh(cfg.parallel)
  with pytest.raises(ConfigError, match=r'parallel\.microbatches=8, which must divide it into'
                                        r' parts divisible by the data axis \(4\)'):
    sharding.check_layout(cfg, mesh)


@pytest.mark.slow
def test_restore_across_pipeline_sizes(tmp_path, shakespeare_dir, tfds_dir):
  """A circular-pipeline checkpoint continues the same losses on other layouts."""
  base = dict(data__manual_dir=shakespeare_dir, data__tfds_data_dir=tfds_dir,
              model__vocab_size=0, train__steps=4, train__log_every=1,
              train__eval_every=4, train__eval_steps=1, train__checkpoint_every=2,
              train__sample_tokens=0)
  saved = tmp_path / 'saved'
  train.run(_config(4, 1, 2, microbatches=2, repeats=2, **base), str(saved))
  original = {r['step']: r['loss'] for r in _metrics(saved) if 'loss' in r}
  # One stage, four (GPipe), and 3-D; the 8-stage layout's steps are checked above.
  for layout in [dict(data=8), dict(data=2, stages=4, microbatches=4),
                 dict(data=2, model=2, stages=2, microbatches=2)]:
    workdir = tmp_path / '_'.join(f'{k}{v}' for k, v in layout.items())
    shutil.copytree(saved, workdir)  # as if the run had stopped after step 2
    shutil.rmtree(workdir / 'checkpoints' / '4')
    os.remove(workdir / 'metrics.jsonl')
    result = train.run(_config(**layout, **base), str(workdir))
    assert result['step'] == 4
    resumed = {r['step']: r['loss'] for r in _metrics(workdir) if 'loss' in r}
    assert sorted(resumed) == [3, 4], workdir.name
    np.testing.assert_allclose([resumed[3], resumed[4]], [original[3], original[4]],
                               rtol=parallel_test.RTOL, err_msg=workdir.name)


def _metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]
