"""Everything about where arrays live: the mesh, the logical-axis rule table.

The model names logical axes only ('embed', 'heads', 'batch', ...). The rule
table below is the one place that maps them to the mesh axes `data`, `model`
and `pipeline`. A logical name without a rule is an error, never a silent
replication.

The mesh uses `AxisType.Auto` on every axis: linen's logical partitioning
(`nn.with_logical_partitioning`, `nn.with_logical_constraint`) annotates
shardings for the XLA partitioner (GSPMD/Shardy) to propagate, which is the
Auto model. jax 0.10's `jax.make_mesh` defaults to Explicit axes, where
shardings are part of array types and linen's annotations do not apply.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import jax
import numpy as np
from flax import linen as nn
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from jaxlm.config import Config, ConfigError, ParallelConfig

MESH_AXES = ('data', 'model', 'pipeline')

# Logical axis -> mesh axis (None: replicated). Parameters use the plain
# names; activations the `act_` ones and `batch`/`length`.
RULES: tuple[tuple[str, str | None], ...] = (
    # parameters
    ('vocab', 'model'),
    ('embed', None),
    ('heads', 'model'),
    ('kv_heads', 'model'),  # grouped-query k/v heads (see REPLICATE_IF_UNEVEN)
    ('kv', None),
    ('mlp', 'model'),
    ('norm', None),
    ('position', None),
    ('layers', 'pipeline'),  # each stage holds its layers (jaxlm/parallel/pipeline.py)
    # activations
    ('batch', 'data'),
    ('length', None),
    ('act_embed', None),
    ('act_heads', 'model'),
    ('act_kv_heads', 'model'),
    ('act_mlp', 'model'),
    ('act_vocab', 'model'),
)

# Logical axes that are replicated where their mesh axes do not divide the
# dimension: fewer key/value heads than the model axis (e.g. 2 kv heads, 4
# tensor shards) leaves every shard with all of them, as in Megatron and MaxText.
REPLICATE_IF_UNEVEN = ('kv_heads', 'act_kv_heads')

# ZeRO: the state kinds that parallel.zero_stage shards over `data`, from
# which stage on. Sharding the `embed` dimension catches every matrix (all
# name it); vectors (norms, biases) stay replicated: they are tiny.
ZERO_STAGE = {'opt_state': 1, 'grads': 2, 'params': 3}
ZERO_RULE = ('embed', 'data')


def rules_for(kind: str, zero_stage: int) -> tuple[tuple[str, str | None], ...]:
  """The rule table for one kind of state: 'params', 'grads', 'opt_state'."""
  if zero_stage >= ZERO_STAGE[kind]:
    return (ZERO_RULE,) + RULES  # earlier rules take priority
  return RULES


def mesh_shape(p: ParallelConfig, num_devices: int) -> tuple[int, int, int]:
  """Resolves -1 (fill) and checks the product against the device count."""
  sizes = [p.data, p.model, p.pipeline]
  if -1 in sizes:
    known = int(np.prod([s for s in sizes if s != -1]))
    if num_devices % known:
      raise ConfigError(
          f'parallel.model*pipeline={known} does not divide the {num_devices}'
          ' devices; pick sizes whose product divides the device count')
    sizes[sizes.index(-1)] = num_devices // known
  if int(np.prod(sizes)) != num_devices:
    raise ConfigError(
        f'mesh (data, model, pipeline)={tuple(sizes)} needs {int(np.prod(sizes))}'
        f' devices but {num_devices} are present; set parallel.data=-1 to fill')
  return tuple(sizes)


def make_mesh(p: ParallelConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """The (data, model, pipeline) mesh over `devices` (default: all)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(p, len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3,
                       devices=devices)


def check_layout(c: Config, mesh: Mesh) -> None:
  """Checks that the batch and model split evenly over the mesh."""
  data, model = mesh.shape['data'], mesh.shape['model']
  micro = c.data.batch_size // c.train.grad_accum_steps
  if micro % data:
    raise ConfigError(
        f'data.batch_size={c.data.batch_size} (/{c.train.grad_accum_steps} grad'
        f' accumulation steps = {micro}) is not divisible by the data axis'
        f' ({data}); use a batch size that is a multiple of {data * c.train.grad_accum_steps}')
  if c.data.batch_size % jax.process_count():
    raise ConfigError(
        f'data.batch_size={c.data.batch_size} is not divisible by the'
        f' {jax.process_count()} processes; use a multiple of {jax.process_count()}')
  for name, size in (('model.num_heads', c.model.num_heads), ('model.d_ff', c.model.d_ff)):
    if size % model:
      raise ConfigError(
          f'{name}={size} is not divisible by parallel.model={model};'
          ' pick a model axis size that divides it')
  if c.model.vocab_size and c.model.vocab_size % model and c.model.real_vocab_size:
    raise ConfigError(
        f'model.vocab_size={c.model.vocab_size} (an import, padded) is not divisible by'
        f' parallel.model={model}; import it again with --vocab_multiple={model} (or a'
        ' multiple of it)')
  if c.model.vocab_size and c.model.vocab_size % model:
    raise ConfigError(
        f'model.vocab_size={c.model.vocab_size} is not divisible by parallel.model={model};'
        f' set model.vocab_multiple={model} (or a multiple of it) and model.vocab_size=0')
  stages = mesh.shape['pipeline']
  p = c.parallel
  if stages > 1:
    if micro % p.microbatches or (micro // p.microbatches) % data:
      raise ConfigError(
          f'the pipeline splits each batch of {micro} rows into parallel.microbatches='
          f'{p.microbatches}, which must divide it into parts divisible by the data axis'
          f' ({data}); use a batch size that is a multiple of {data * p.microbatches}'
          f' x train.grad_accum_steps')
    if c.model.num_layers % (stages * p.pipeline_repeats):
      raise ConfigError(
          f'model.num_layers={c.model.num_layers} does not split into {stages} pipeline'
          f' stages x parallel.pipeline_repeats={p.pipeline_repeats} chunks;'
          ' pick sizes whose product divides num_layers')
    if p.pipeline_repeats > 1 and p.microbatches < stages:
      raise ConfigError(
          f'parallel.microbatches={p.microbatches} is fewer than the {stages} pipeline'
          ' stages; the circular schedule needs microbatches >= stages')
  if c.parallel.zero_stage and c.model.d_model % data:
    raise ConfigError(
        f'parallel.zero_stage={c.parallel.zero_stage} shards model.d_model={c.model.d_model}'
        f' over the data axis ({data}), which does not divide it; use zero_stage=0'
        ' or a data axis that divides d_model')


@contextlib.contextmanager
def activate(mesh: Mesh, rules=RULES):
  """Enters the mesh and the rule table; enter once, at the top of a job."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def constrain(x, logical_axes: tuple[str | None, ...]):
  """Sharding constraint by logical names; a no-op when no rules are active."""
  if any(name in REPLICATE_IF_UNEVEN for name in logical_axes):
    logical_axes = _even(logical_axes, x.shape, jax.sharding.get_abstract_mesh(),
                         nn.get_logical_axis_rules())
  return nn.with_logical_constraint(
      x, logical_axes, fallback=nn.spmd.RulesFallback.RAISE_ERROR)


def _even(names, shape, mesh, rules) -> tuple:
  """`names` with each REPLICATE_IF_UNEVEN name that its mesh axes do not divide as None."""
  if mesh is None or mesh.empty:
    return tuple(names)
  table = dict(reversed(tuple(rules)))  # the first rule for a name wins
  out = []
  for name, size in zip(names, shape):
    axes = table.get(name)
    axes = (axes,) if isinstance(axes, str) else (axes or ())
    split = int(np.prod([mesh.shape[a] for a in axes])) if axes else 1
    out.append(None if name in REPLICATE_IF_UNEVEN and size % split else name)
  return tuple(out)


def _check_names(logical_specs, rules) -> None:
  known = {name for name, _ in rules}
  for spec in jax.tree.leaves(logical_specs, is_leaf=lambda x: isinstance(x, P)):
    if not isinstance(spec, P):
      continue
    for name in spec:
      if name is not None and name not in known:
        raise ValueError(
            f'logical axis {name!r} has no rule in jaxlm/parallel/sharding.py RULES;'
            ' add one (None to replicate)')


def logical_specs(boxed_tree, mesh: Mesh | None = None, rules=RULES):
  """PartitionSpecs of logical names for a tree with nn.Partitioned leaves.

  With a mesh, REPLICATE_IF_UNEVEN names that the mesh does not divide are None.
  """
  if mesh is None:
    return nn.get_partition_spec(boxed_tree)

  def spec(x):
    if not isinstance(x, nn.Partitioned):
      return P()
    return P(*_even(x.names, x.value.shape, mesh, rules))
  return jax.tree.map(spec, boxed_tree, is_leaf=lambda x: isinstance(x, nn.Partitioned))


def mesh_shardings(boxed_tree, mesh: Mesh, rules=RULES):
  """NamedShardings for every leaf of a tree holding nn.Partitioned boxes."""
  specs = logical_specs(boxed_tree, mesh, rules)
  _check_names(specs, rules)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def unbox_shapes(boxed_tree):
  """Plain ShapeDtypeStructs from an abstract boxed tree (no constraints)."""
  def unbox(x):
    if isinstance(x, nn.Partitioned):
      x = x.unbox(apply_constraint=False)
    return jax.ShapeDtypeStruct(x.shape, x.dtype)
  return jax.tree.map(unbox, boxed_tree, is_leaf=lambda x: isinstance(x, nn.Partitioned))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batches: rows over `data`, the rest replicated."""
  return NamedSharding(mesh, P('data'))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())
