"""The rule table: a golden parameter -> PartitionSpec table, ZeRO variants."""

import jax
from jax.sharding import PartitionSpec as P

from jaxlm.parallel import sharding
from jaxlm.training import steps as steps_lib
from jaxlm.model.gpt import GPT
from tests.configs import tiny_config

# (data, model, pipeline) = (4, 2, 1): layers are split over `pipeline` (size 1 here).
# Change the rules on purpose, then update this table.
GOLDEN = {
    'ln_final/scale': P(None),
    'stack/blocks/attn/out': P('pipeline', 'model', None, None),
    'stack/blocks/attn/qkv': P('pipeline', None, None, 'model', None),
    'stack/blocks/ln_attn/scale': P('pipeline', None),
    'stack/blocks/ln_mlp/scale': P('pipeline', None),
    'stack/blocks/mlp/down': P('pipeline', 'model', None),
    'stack/blocks/mlp/up': P('pipeline', None, 'model'),
    'wpe': P(None, None),
    'wte': P('model', None),
}
# ZeRO shards the `embed` dimension of every matrix over `data`.
GOLDEN_ZERO = dict(GOLDEN, **{
    'stack/blocks/attn/out': P('pipeline', 'model', None, 'data'),
    'stack/blocks/attn/qkv': P('pipeline', None, 'data', 'model', None),
    'stack/blocks/mlp/down': P('pipeline', 'model', 'data'),
    'stack/blocks/mlp/up': P('pipeline', 'data', 'model'),
    'wpe': P(None, 'data'),
    'wte': P('model', 'data'),
})


def _specs(tree):
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {'/'.join(k.key for k in path): sh.spec for path, sh in flat}


def _shardings(zero_stage):
  cfg = tiny_config(model__num_heads=8, parallel__data=4, parallel__model=2,
                    parallel__zero_stage=zero_stage)
  mesh = sharding.make_mesh(cfg.parallel)
  s = steps_lib.build(cfg, mesh)
  return s.state_shardings


def _mu_specs(state_shardings):
  adam = state_shardings.opt_state[1][0]  # chain(clip, adamw)[1] -> scale_by_adam
  return _specs(adam.mu)


def test_golden_parameter_specs():
  assert _specs(_shardings(0).params) == GOLDEN


def test_zero_stages_shard_what_they_say():
  for stage, params, opt in ((0, GOLDEN, GOLDEN), (1, GOLDEN, GOLDEN_ZERO),
                             (2, GOLDEN, GOLDEN_ZERO), (3, GOLDEN_ZERO, GOLDEN_ZERO)):
    sh = _shardings(stage)
    assert _specs(sh.params) == params, stage
    assert _mu_specs(sh) == opt, stage


def test_every_parameter_axis_has_a_rule():
  cfg = tiny_config(model__use_bias=True, model__tie_embeddings=False)
  boxed = steps_lib.abstract_params(GPT(cfg.model), cfg.data.seq_len)
  mesh = sharding.make_mesh(cfg.parallel)
  for kind in ('params', 'grads', 'opt_state'):
    sharding.mesh_shardings(boxed, mesh, sharding.rules_for(kind, 3))
