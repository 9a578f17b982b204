"""The planner: exact state bytes, compiled temporaries, collective traffic."""

import jax
import pytest

from jaxlm import plan
from jaxlm.parallel import sharding
from tests.configs import tiny_config


def _plan(data, model, zero, compile_=True, **overrides):
  cfg = tiny_config(model__num_heads=8, parallel__data=data, parallel__model=model,
                    parallel__zero_stage=zero, **overrides)
  n = data * model
  mesh = sharding.make_mesh(cfg.parallel, jax.devices()[:n])
  return (plan.compile_plan if compile_ else plan.state_bytes)(cfg, mesh)


def test_zero3_holds_an_eighth_of_the_state():
  zero0, zero3 = _plan(8, 1, 0, False), _plan(8, 1, 3, False)
  ratio = (zero3.params + zero3.opt_state) / (zero0.params + zero0.opt_state)
  # Matrices shard 8 ways; norm scales stay whole: 0.1309 for this tiny model.
  assert 0.125 <= ratio < 0.14
  assert zero0.grads == zero0.params and zero3.grads == zero3.params


def test_zero_stages_step_down():
  stages = [_plan(8, 1, z, False) for z in range(4)]
  assert stages[0].opt_state > stages[1].opt_state == stages[2].opt_state == stages[3].opt_state
  assert stages[1].grads > stages[2].grads
  assert stages[2].params > stages[3].params


def test_tensor_parallel_all_reduces_activations():
  single = _plan(1, 1, 0)
  tensor = _plan(1, 8, 0)
  data = _plan(8, 1, 0)
  assert sum(single.collectives.values()) == 0
  assert tensor.collectives['all-reduce'] > 0  # no data axis: these are activations
  # Data parallel all-reduces the gradients, about the parameter bytes.
  assert 0.9 * data.params <= data.collectives['all-reduce'] <= 1.5 * data.params
  assert data.temp > 0


def test_collectives_in_loops_count_per_iteration():
  hlo = '''
%body (p: f32[4]) -> f32[4] {
  %ag = f32[8,4]{1,0} all-gather(%p), dimensions={0}
}

ENTRY %main (x: f32[4]) -> f32[4] {
  %ar = f32[16]{0} all-reduce(%x), to_apply=%add
  %w = (s32[], f32[4]) while(%t), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"12"}}
}
'''
  got = plan.collective_bytes(hlo)
  assert got['all-reduce'] == 16 * 4
  assert got['all-gather'] == 12 * 8 * 4 * 4


@pytest.mark.slow
def test_suggests_the_smallest_layout_that_fits():
  cfg = tiny_config(model__num_heads=8)
  best = plan.suggest(cfg, 8, device_memory=1024 ** 3)
  assert best is not None and best.layout[3] == 3  # ZeRO-3 holds the least state
  assert plan.suggest(cfg, 8, device_memory=1024) is None


def test_the_configs_own_layout_is_suggested_when_less_state_needs_more_memory(monkeypatch):
  cfg = tiny_config(parallel__data=8)
  own = plan.Plan(layout=(8, 1, 1, 0, 'none'), params=10, opt_state=20, grads=10, temp=60)

  def compiled(c, mesh):  # every candidate's temporaries overflow the budget
    p = plan.state_bytes(c, mesh)
    p.temp = 10 * plan.GiB
    return p
  monkeypatch.setattr(plan, 'compile_plan', compiled)
  assert plan.suggest(cfg, 8, device_memory=5 * 2 ** 20, fallback=own) is own  # compiles 4
  assert plan.suggest(cfg, 8, device_memory=50, fallback=own) is None  # own needs 100 B


def test_tensor_parallel_loss_never_gathers_the_logits():
  """With the vocabulary split over `model`, no collective moves a vocab-sized axis."""
  import re
  import jax.numpy as jnp
  from jaxlm.training import steps as steps_lib
  vocab = 520  # a size no other dimension of this model has (8 x 65)
  cfg = tiny_config(model__num_heads=8, model__vocab_size=vocab, parallel__data=1,
                    parallel__model=8)
  mesh = sharding.make_mesh(cfg.parallel)
  with sharding.activate(mesh):
    s = steps_lib.build(cfg, mesh)
    tokens = jax.ShapeDtypeStruct((16, 16), jnp.int32, sharding=sharding.batch_sharding(mesh))
    hlo = s.train.lower(s.abstract_state, {'inputs': tokens, 'targets': tokens}).compile().as_text()
  shapes = [m.group(1) for m in plan._OP.finditer(hlo)]
  assert shapes, 'expected collectives under tensor parallelism'
  assert not [sh for sh in shapes if re.search(rf'[\[,]{vocab}[\],]', sh)]


def test_when_unrolled_layers_fit_nowhere_the_rolled_loop_is_tried(monkeypatch):
  cfg = tiny_config(model__num_heads=8, model__scan_unroll=2)
  tried = []

  def compile_plan(c, mesh):  # as measured for GPT-2: the unrolled step needs far more
    p = plan.state_bytes(c, mesh)  # exact state bytes; temporaries stand in for XLA's
    tried.append(c.model.scan_unroll)
    p.temp, p.collectives = (10**12 if c.model.scan_unroll > 1 else 10**6), {}
    return p
  monkeypatch.setattr(plan, 'compile_plan', compile_plan)
  best = plan.suggest(cfg, 8, 4 * plan.GiB, max_compiles=1)
  assert tried == [2, 1] and best.scan_unroll == 1
  assert 'scan_unroll' not in plan.format_plan(best).splitlines()[0]
  unrolled = plan.state_bytes(cfg, sharding.make_mesh(cfg.parallel))
  assert 'scan_unroll=2' in plan.format_plan(unrolled).splitlines()[0]
