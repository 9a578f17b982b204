"""Train state and the pure jitted steps of any task, with explicit shardings.

A task hands over an `Objective`: its model, example inputs, loss and eval
outputs. `train_step(state, batch) -> (state, metrics)` is a pure function of
them; `Steps` holds it jitted with the state's shardings, the batch sharded
over `data`, and the state donated. The same step serves every task, so
accumulation, the NaN/Inf guard and ZeRO work for all of them.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from flax import struct
from jax.sharding import Mesh

from jaxlm.parallel import pipeline
from jaxlm.parallel import sharding
from jaxlm.config import Config, NonFinite
from jaxlm.training.optim import make_optimizer, schedule

Batch = dict[str, jax.Array]  # a task's arrays, each with a leading batch axis
# (model, params, batch, rng, train) -> (loss, {metric: scalar}); rng is None when not training
LossFn = Callable[..., tuple[jax.Array, dict]]


@dataclasses.dataclass(frozen=True)
class Objective:
  """What a task's steps compute."""
  model: nn.Module
  example: tuple  # inputs for model.init (batch of 1)
  loss: LossFn
  # (model, params, batch) -> a pytree of arrays the host reduces (jaxlm/tasks/*.py)
  evaluate: Callable[..., Any]


class TrainState(struct.PyTreeNode):
  step: jax.Array  # int32 scalar: optimizer steps taken
  params: Any
  opt_state: Any
  rng: jax.Array  # uint32[2] base key; step s uses fold_in(rng, s)
  # int32 scalar: steps whose loss or gradients were NaN/Inf (None: not tracked)
  nonfinite: jax.Array | None = None


def _split_micro(batch: Batch, accum: int) -> Batch:
  # Microbatch a takes rows a, a+A, a+2A, ...: each device keeps its own rows,
  # so splitting moves no data between devices.
  def split(x):
    x = x.reshape(x.shape[0] // accum, accum, *x.shape[1:])
    return jnp.swapaxes(x, 0, 1)
  return jax.tree.map(split, batch)


def loss_and_grads(params, batch: Batch, rng, *, objective: Objective, accum: int):
  """Mean loss, task metrics and gradients over the batch, in `accum` sequential microbatches.

  A batch with `weights` has a weighted-mean loss (packed rows, padded
  examples): microbatch a counts by its share of the weights, sum(w_a) /
  sum(w), so the accumulated loss is the weighted mean over the whole batch.
  Without weights each counts 1/accum.
  """
  def loss(p, b, r):
    return objective.loss(objective.model, p, b, r, True)

  grad_fn = jax.value_and_grad(loss, has_aux=True)
  if accum == 1:
    (loss_value, metrics), grads = grad_fn(params, batch, rng)
    return loss_value, metrics, grads

  weighted = 'weights' in batch
  if weighted:
    total = jnp.sum(batch['weights'].astype(jnp.float32))
    total = jnp.where(total > 0, total, 1.0)

  def body(carry, xs):
    loss_sum, metric_sum, grad_sum = carry
    micro, i = xs
    (loss_value, metrics), grads = grad_fn(params, micro, jax.random.fold_in(rng, i))
    if weighted:
      share = jnp.sum(micro['weights'].astype(jnp.float32)) / total
      loss_value, metrics, grads = jax.tree.map(lambda x: x * share,
                                                (loss_value, metrics, grads))
    return (loss_sum + loss_value, jax.tree.map(jnp.add, metric_sum, metrics),
            jax.tree.map(jnp.add, grad_sum, grads)), None

  micro0 = jax.tree.map(lambda x: x[0], _split_micro(batch, accum))
  metric_shapes = jax.eval_shape(lambda: grad_fn(params, micro0, rng)[0][1])
  zeros = lambda tree: jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), tree)
  (loss_value, metrics, grads), _ = jax.lax.scan(
      body, (jnp.zeros((), jnp.float32), zeros(metric_shapes), zeros(params)),
      (_split_micro(batch, accum), jnp.arange(accum)))
  if weighted:
    return loss_value, metrics, grads
  mean = lambda tree: jax.tree.map(lambda x: x / accum, tree)
  return loss_value / accum, mean(metrics), mean(grads)


def train_step(state: TrainState, batch: Batch, *, objective: Objective,
               tx: optax.GradientTransformation, lr_schedule, accum: int,
               grad_shardings=None, on_nonfinite: NonFinite = NonFinite.SKIP):
  """One optimizer step: (state, batch) -> (state, metrics).

  A step whose loss or gradients are not finite changes neither the params
  nor the optimizer state and is counted in `state.nonfinite`. Under SKIP the
  step counter (and so the data) moves on; under HALT the state freezes from
  then on, so the host can stop and save the last good state.
  """
  rng = jax.random.fold_in(state.rng, state.step)
  loss, task_metrics, grads = loss_and_grads(state.params, batch, rng, objective=objective,
                                             accum=accum)
  if grad_shardings is not None:  # ZeRO-2: reduce-scatter instead of all-reduce
    grads = jax.lax.with_sharding_constraint(grads, grad_shardings)
  grad_norm = optax.tree.norm(grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  nonfinite = state.nonfinite + (~finite).astype(jnp.int32)
  if on_nonfinite is NonFinite.HALT:
    apply = finite & (state.nonfinite == 0)
    step = state.step + apply.astype(jnp.int32)
  else:
    apply, step = finite, state.step + 1
  keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(apply, n, o), new, old)
  params = keep(params, state.params)
  metrics = {
      'loss': loss,
      'grad_norm': grad_norm,
      'param_norm': optax.tree.norm(params),  # of the returned params, on device
      'learning_rate': lr_schedule(state.step),
      'nonfinite_steps': nonfinite,
      **task_metrics,
  }
  new_state = state.replace(step=step, params=params,
                            opt_state=keep(opt_state, state.opt_state), nonfinite=nonfinite)
  return new_state, metrics


def eval_step(params, batch: Batch, *, objective: Objective):
  """The task's eval outputs for one batch (no dropout)."""
  return objective.evaluate(objective.model, params, batch)


def init_state(seed: int, start_params=None, *, objective: Objective, tx,
               to_stage_order: Callable = lambda tree: tree) -> TrainState:
  """The same initial parameters for every layout (in its layer order).

  start_params (e.g. a pretrained body) replace the top-level entries of the
  random parameters they name.
  """
  rng = jax.random.PRNGKey(seed)
  init_rng, train_rng = jax.random.split(rng)
  example = [jnp.zeros(x.shape, x.dtype) for x in objective.example]
  params = nn.meta.unbox(objective.model.init({'params': init_rng}, *example)['params'])
  if start_params is not None:
    params = {**params, **start_params}
  params = to_stage_order(params)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=tx.init(params), rng=train_rng,
                    nonfinite=jnp.zeros((), jnp.int32))


@dataclasses.dataclass(frozen=True)
class Steps:
  """The model, optimizer and jitted steps for one config on one mesh."""
  model: nn.Module
  objective: Objective
  tx: optax.GradientTransformation
  mesh: Mesh
  state_shardings: TrainState
  abstract_state: TrainState  # ShapeDtypeStructs carrying the shardings
  init: Callable[..., TrainState]  # init() random; init(start_params) with those replaced
  train: Callable[[TrainState, Batch], tuple[TrainState, dict]]
  eval: Callable[[Any, Batch], Any]
  # The circular pipeline keeps layers in stage order (jaxlm/parallel/pipeline.py);
  # checkpoints and sampling use the canonical order. Identities otherwise.
  to_canonical: Callable[[Any], Any]
  from_canonical: Callable[[TrainState], TrainState]
  pipeline: pipeline.Spec | None


def abstract_params(model: nn.Module, example):
  """Parameter shapes, still boxed with their logical axis names.

  example: the model's init inputs, or for a GPT the sequence length.
  """
  if isinstance(example, int):
    example = (jax.ShapeDtypeStruct((1, example), jnp.int32),)
  example = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in example]
  return jax.eval_shape(lambda *xs: model.init(jax.random.PRNGKey(0), *xs), *example)['params']


def state_shardings(model: nn.Module, tx, mesh: Mesh, example, zero_stage: int
                    ) -> tuple[TrainState, Any]:
  """Shardings for every leaf of the TrainState, and for the gradients."""
  boxed = abstract_params(model, example)
  by_kind = {kind: sharding.mesh_shardings(boxed, mesh, sharding.rules_for(kind, zero_stage))
             for kind in ('params', 'grads', 'opt_state')}
  abstract_opt = jax.eval_shape(tx.init, sharding.unbox_shapes(boxed))
  rep = sharding.replicated(mesh)
  opt_sh = optax.tree_map_params(tx, lambda _, s: s, abstract_opt, by_kind['opt_state'],
                                 transform_non_params=lambda _: rep)
  state = TrainState(step=rep, params=by_kind['params'], opt_state=opt_sh, rng=rep,
                     nonfinite=rep)
  return state, by_kind['grads']


def build(c: Config, mesh: Mesh, objective: Objective | None = None) -> Steps:
  """Jits init/train/eval of a task's objective with explicit shardings.

  Without an objective: the config's own task (jaxlm/tasks/__init__.py).
  """
  sharding.check_layout(c, mesh)
  stages = mesh.shape['pipeline']
  if objective is None:
    from jaxlm import tasks  # (the tasks build on this module)
    objective = tasks.objective(c, pipeline.stack_for(c.parallel, stages))
  spec = pipeline.spec_for(c.parallel, stages) if stages > 1 else None
  tx = make_optimizer(c.train)
  shardings, grad_shardings = state_shardings(objective.model, tx, mesh, objective.example,
                                              c.parallel.zero_stage)
  rep, batch_sh = sharding.replicated(mesh), sharding.batch_sharding(mesh)

  identity = lambda tree: tree
  to_canonical = from_canonical = to_stage_order = identity
  if spec is not None and spec.repeats > 1:
    n = c.model.num_layers
    to_stage_order = functools.partial(pipeline.to_stage_order, num_layers=n, spec=spec)
    to_canonical = jax.jit(functools.partial(pipeline.to_canonical, num_layers=n, spec=spec))
    from_canonical = jax.jit(to_stage_order, out_shardings=shardings)

  init_fn = functools.partial(init_state, c.train.seed, objective=objective, tx=tx,
                              to_stage_order=to_stage_order)
  scratch = jax.jit(lambda: init_fn(None), out_shardings=shardings)

  def init(start_params=None):
    if start_params is None:
      return scratch()
    start_sh = {k: shardings.params[k] for k in start_params}
    return jax.jit(init_fn, in_shardings=(start_sh,), out_shardings=shardings)(start_params)

  abstract = jax.eval_shape(scratch)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, shardings)
  train = jax.jit(
      functools.partial(train_step, objective=objective, tx=tx, lr_schedule=schedule(c.train),
                        accum=c.train.grad_accum_steps,
                        grad_shardings=grad_shardings if c.parallel.zero_stage >= 2 else None,
                        on_nonfinite=c.train.on_nonfinite),
      in_shardings=(shardings, batch_sh), out_shardings=(shardings, rep),
      donate_argnums=0)
  evaluate = jax.jit(functools.partial(eval_step, objective=objective),
                     in_shardings=(shardings.params, batch_sh), out_shardings=rep)
  return Steps(objective.model, objective, tx, mesh, shardings, abstract, init, train,
               evaluate, to_canonical, from_canonical, spec)
