"""Pipeline parallelism: the scanned blocks as stages over the `pipeline` axis.

The model never sees stages. `Pipeline` is a drop-in for `model.Blocks` with
the same parameters ([N, ...] under `stack/blocks`); `GPT(cfg, stack=...)`
takes it. Embeddings and the output head stay outside, on every stage.

Schedule. The batch is split into M microbatches. Stage p of P holds R chunks
of N/(P*R) layers; chunk c = r*P + p is the r-th chunk of stage p. At tick t
stage p runs iteration i = t - p: microbatch i % M through its chunk i // M.
Its output moves to stage p+1 with a `ppermute`; the last stage's output goes
around the ring to stage 0, which keeps it until that microbatch's next repeat
(this needs M >= P). R = 1 is GPipe: all forward passes, then the backward
pass that autodiff derives from the same loop, in reverse. R > 1 is the
circular schedule. A step takes M*R + P - 1 ticks, of which P - 1 are the
pipeline filling and draining, so the bubble is (P-1) / (M*R + P - 1).

Layer order. A stage's chunks are not adjacent layers when R > 1, but a
sharding over `pipeline` gives each stage a contiguous block of the [N, ...]
axis. So the train state keeps the layers in stage order (`layer_order`), and
checkpoints, tests and sampling see them in canonical order (`to_canonical`).
For GPipe the two orders are the same.

Packed rows. Segment ids and positions ([B, L] each, or absent) are split
into the same microbatches as x; they never travel the ring: every stage
holds all of them and takes microbatch m's at the tick it runs m.

The body is written per stage with `jax.shard_map`, manual over `pipeline`
only: inside a stage, data and tensor parallelism (and ZeRO) stay automatic,
through the same rule table as without a pipeline.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.sharding import PartitionSpec as P

from jaxlm.config import ModelConfig, ParallelConfig
from jaxlm.model.gpt import Blocks, scanned_block
from jaxlm.parallel.sharding import constrain

AXIS = 'pipeline'


@dataclasses.dataclass(frozen=True)
class Spec:
  """A pipeline: P stages, R chunks per stage, M microbatches per batch."""
  stages: int
  repeats: int
  microbatches: int

  @property
  def ticks(self) -> int:
    return self.microbatches * self.repeats + self.stages - 1

  @property
  def bubble(self) -> float:
    """Fraction of ticks a stage idles: (P-1) / (M*R + P-1)."""
    return (self.stages - 1) / self.ticks


def spec_for(p: ParallelConfig, stages: int) -> Spec:
  """The pipeline of a config on a mesh with `stages` pipeline devices."""
  return Spec(stages=stages, repeats=p.pipeline_repeats, microbatches=p.microbatches)


def stack_for(p: ParallelConfig, stages: int) -> Callable[..., nn.Module]:
  """What GPT runs its blocks with: Blocks, or a Pipeline over `stages` devices."""
  if stages == 1:
    return Blocks
  return functools.partial(Pipeline, spec=spec_for(p, stages))


def layer_order(num_layers: int, spec: Spec) -> np.ndarray:
  """order[k] = the canonical layer kept at position k of the stage-order stack.

  Position k = (p*R + r)*C + j holds layer (r*P + p)*C + j: stage p's r-th
  chunk of C = N/(P*R) layers. The identity for GPipe (R = 1).
  """
  P_, R = spec.stages, spec.repeats
  C = num_layers // (P_ * R)
  p, r, j = np.meshgrid(np.arange(P_), np.arange(R), np.arange(C), indexing='ij')
  return ((r * P_ + p) * C + j).reshape(-1)


def permute_layers(tree, order: np.ndarray):
  """Reorders axis 0 of every leaf under a `blocks` key (params, grads, Adam moments)."""
  def permute(path, x):
    if any(getattr(k, 'key', None) == 'blocks' for k in path):
      return jnp.take(x, order, axis=0)
    return x
  return jax.tree_util.tree_map_with_path(permute, tree)


def to_stage_order(tree, num_layers: int, spec: Spec):
  return permute_layers(tree, layer_order(num_layers, spec))


def to_canonical(tree, num_layers: int, spec: Spec):
  return permute_layers(tree, np.argsort(layer_order(num_layers, spec)))


class Pipeline(nn.Module):
  """The blocks of `model.Blocks`, run as a pipeline over the `pipeline` mesh axis."""
  cfg: ModelConfig
  deterministic: bool
  spec: Spec

  @nn.compact
  def __call__(self, x_BLD, segment_ids_BL=None, positions_BL=None):
    blocks = scanned_block(self.cfg)(self.cfg, self.deterministic, name='blocks')
    if self.is_initializing():  # the same parameters, in canonical order
      return blocks(x_BLD, None, segment_ids_BL, positions_BL)[0]
    params = self.variables['params']['blocks']
    use_rng = not self.deterministic and self.cfg.dropout > 0
    rng = self.make_rng('dropout') if use_rng else jax.random.PRNGKey(0)
    stage = functools.partial(_stage, self.cfg, not use_rng)
    packed = {name: x for name, x in (('segment_ids_BL', segment_ids_BL),
                                      ('positions_BL', positions_BL)) if x is not None}
    return run_stages(stage, params, x_BLD, rng, self.spec, packed)


def _stage(cfg: ModelConfig, deterministic: bool, chunk, x_BLD, rng, packed):
  """One chunk of consecutive layers: Blocks with the chunk's parameters."""
  num_layers = jax.tree.leaves(chunk)[0].shape[0]
  chunk_cfg = dataclasses.replace(cfg, num_layers=num_layers)
  rngs = {} if deterministic else {'dropout': rng}
  return Blocks(chunk_cfg, deterministic).apply({'params': {'blocks': chunk}}, x_BLD,
                                                rngs=rngs, **packed)


def _split(x_B, M: int):
  # Microbatch m takes rows m, m+M, m+2M, ...: each data shard keeps its rows.
  B = x_B.shape[0]
  x = x_B.reshape(B // M, M, *x_B.shape[1:]).swapaxes(0, 1)
  return constrain(x, (None, 'batch', 'length', 'act_embed')[:x.ndim])


def _merge(x_MbLD):
  M, b = x_MbLD.shape[:2]
  return x_MbLD.swapaxes(0, 1).reshape(M * b, *x_MbLD.shape[2:])


def run_stages(stage: Callable, params, x_BLD, rng, spec: Spec, packed=None):
  """Runs `stage(chunk_params, x, rng, packed)` over all chunks for every microbatch.

  packed: {name: [B, L]} arrays (segment ids, positions) each microbatch takes
  its rows of, as it does of x.
  """
  packed = {} if packed is None else packed
  param_specs = jax.tree.map(lambda _: P(AXIS), params)
  body = jax.shard_map(functools.partial(_schedule, stage, spec),
                       in_specs=(param_specs, P(), P(), P()), out_specs=P(),
                       axis_names={AXIS})
  split = functools.partial(_split, M=spec.microbatches)
  y_MbLD = body(params, split(x_BLD), rng, jax.tree.map(split, packed))
  return constrain(_merge(y_MbLD), ('batch', 'length', 'act_embed'))


def _schedule(stage: Callable, spec: Spec, params, x_MbLD, rng, packed_Mb):
  """Per stage: the tick loop. params: this stage's [R*C, ...] layers."""
  P_, R, M = spec.stages, spec.repeats, spec.microbatches
  p = jax.lax.axis_index(AXIS)
  chunks = jax.tree.map(lambda a: a.reshape(R, a.shape[0] // R, *a.shape[1:]), params)
  ring = [(s, (s + 1) % P_) for s in range(P_)]
  varying = lambda x: jax.lax.pcast(x, AXIS, to='varying')

  def tick(carry, t):
    received_bLD, waiting_MbLD, out_MbLD = carry
    i = t - p  # this stage's iteration
    m, r = i % M, jnp.clip(i // M, 0, R - 1)
    x_bLD = jnp.where(p == 0, waiting_MbLD[t % M], received_bLD)
    chunk = jax.tree.map(lambda a: a[r], chunks)
    packed_b = jax.tree.map(lambda a: a[m], packed_Mb)
    y_bLD = stage(chunk, x_bLD, jax.random.fold_in(rng, m * P_ * R + r * P_ + p), packed_b)
    finished = (p == P_ - 1) & (i >= (R - 1) * M) & (i < R * M)
    out_MbLD = out_MbLD.at[m].set(jnp.where(finished, y_bLD, out_MbLD[m]))
    received_bLD = jax.lax.ppermute(y_bLD, AXIS, ring)
    # Stage 0 keeps what the last stage finished (iteration t - P + 1) for
    # that microbatch's next repeat, M - P + 1 ticks later.
    back = t - (P_ - 1)
    keep = (p == 0) & (back >= 0) & (back < (R - 1) * M)
    slot = back % M
    waiting_MbLD = waiting_MbLD.at[slot].set(
        jnp.where(keep, received_bLD, waiting_MbLD[slot]))
    return (received_bLD, waiting_MbLD, out_MbLD), None

  init = (varying(jnp.zeros_like(x_MbLD[0])), varying(x_MbLD),
          varying(jnp.zeros_like(x_MbLD)))
  (_, _, out_MbLD), _ = jax.lax.scan(tick, init, jnp.arange(spec.ticks))
  return jax.lax.psum(jnp.where(p == P_ - 1, out_MbLD, 0), AXIS)


def describe(spec: Spec) -> str:
  """One line for the run log."""
  kind = 'gpipe' if spec.repeats == 1 else f'circular x{spec.repeats}'
  return (f'pipeline: {spec.stages} stages, {kind}, {spec.microbatches} microbatches;'
          f' bubble {100 * spec.bubble:.1f}% = (P-1)/(M*R+P-1)')

