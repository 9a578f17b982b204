"""Will a layout fit? Per-device memory and communication, before any hardware.

  python -m jaxlm.plan --config=experiments/gpt2_124m.py --devices=64 \
      [--device_memory=80] [--config.parallel.model=4 ...]

Compiles (never runs) the train step for the config's mesh on N simulated CPU
devices and prints, per device: parameter, optimizer-state and gradient bytes
(exact, from the shardings), XLA's temporary bytes (compiled memory analysis)
and the collective traffic of one step read from the compiled HLO. With
--device_memory (GiB) it also suggests the layout with the least per-device
state that fits, compiling candidates in that order until one does.
"""

from __future__ import annotations

import dataclasses
import re
import sys

from jaxlm.parallel.simulated import use_simulated_devices

if __name__ == '__main__':
  use_simulated_devices(sys.argv)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxlm.parallel import sharding  # noqa: E402
from jaxlm.training import steps as steps_lib  # noqa: E402
from jaxlm.training.memory import shard_bytes  # noqa: E402
from jaxlm.training.metrics import format_bytes  # noqa: E402
from jaxlm.config import Config, ConfigError, Remat  # noqa: E402

COLLECTIVES = ('all-reduce', 'all-gather', 'reduce-scatter', 'all-to-all', 'collective-permute')
_OP = re.compile(r'=\s*(.*?)\s(' + '|'.join(COLLECTIVES) + r')(?:-start)?\(')
_SHAPE = re.compile(r'\b(pred|s8|u8|s16|u16|s32|u32|s64|u64|f16|bf16|f32|f64)\[([\d,]*)\]')
_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 's16': 2, 'u16': 2, 'f16': 2, 'bf16': 2,
          's32': 4, 'u32': 4, 'f32': 4, 's64': 8, 'u64': 8, 'f64': 8}
GiB = 1024 ** 3


@dataclasses.dataclass
class Plan:
  layout: tuple[int, int, int, int, str]  # data, model, pipeline, zero_stage, remat
  params: int  # bytes per device
  opt_state: int
  grads: int
  temp: int | None = None  # XLA temporaries per device; None: not compiled
  collectives: dict[str, int] | None = None  # bytes per device per step, by kind
  scan_unroll: int = 1  # model.scan_unroll of the compiled step

  @property
  def state(self) -> int:
    return self.params + self.opt_state + self.grads

  @property
  def total(self) -> int:
    return self.state + (self.temp or 0)


def state_bytes(c: Config, mesh) -> Plan:
  """Exact per-device bytes of parameters, optimizer state and gradients."""
  s = steps_lib.build(c, mesh)
  abstract = jax.eval_shape(s.init)
  sh = s.state_shardings
  _, grad_sh = steps_lib.state_shardings(s.model, s.tx, mesh, s.objective.example,
                                         c.parallel.zero_stage)
  p = c.parallel
  return Plan(layout=(mesh.shape['data'], mesh.shape['model'], mesh.shape['pipeline'],
                      p.zero_stage, p.remat.value),
              params=shard_bytes(abstract.params, sh.params),
              opt_state=shard_bytes(abstract.opt_state, sh.opt_state),
              grads=shard_bytes(abstract.params, grad_sh), scan_unroll=c.model.scan_unroll)


def collective_bytes(hlo: str) -> dict[str, int]:
  """Bytes each device's collectives produce in one step, by kind.

  An op's bytes are the size of its result on one device; ops inside loops
  (the scanned layers) count once per iteration.
  """
  calls, ops = {}, {}  # computation -> [(callee, times)] / [(collective, bytes)]
  current = None
  for line in hlo.splitlines():
    head = re.match(r'(?:ENTRY\s+)?%(\S+)\s.*\{\s*$', line)
    if head and not line.startswith(' '):
      current = head.group(1)
      calls.setdefault(current, [])
      if line.startswith('ENTRY'):
        entry = current
      continue
    if current is None:
      continue
    loop = re.search(r'\swhile\(.*body=%([\w.\-]+).*"known_trip_count":\{"n":"(\d+)"', line)
    if loop:
      calls[current].append((loop.group(1), int(loop.group(2))))
    for callee in re.findall(r'(?:calls|to_apply|condition)=%([\w.\-]+)', line):
      calls[current].append((callee, 1))
    op = _OP.search(line)
    if op:
      size = sum(_BYTES[t] * int(np.prod([int(d) for d in dims.split(',') if d] or [1]))
                 for t, dims in _SHAPE.findall(op.group(1)))
      ops.setdefault(current, []).append((op.group(2), size))
  totals = dict.fromkeys(COLLECTIVES, 0)

  def visit(name, times):
    for kind, size in ops.get(name, []):
      totals[kind] += size * times
    for callee, n in calls.get(name, []):
      visit(callee, times * n)
  visit(entry, 1)
  return totals


def compile_plan(c: Config, mesh) -> Plan:
  """state_bytes plus XLA's temporaries and the collectives of one step."""
  plan = state_bytes(c, mesh)
  with sharding.activate(mesh):
    s = steps_lib.build(c, mesh)
    tokens = jax.ShapeDtypeStruct((c.data.batch_size, c.data.seq_len), jnp.int32,
                                  sharding=sharding.batch_sharding(mesh))
    compiled = s.train.lower(s.abstract_state, {'inputs': tokens, 'targets': tokens}).compile()
  plan.temp = compiled.memory_analysis().temp_size_in_bytes
  plan.collectives = collective_bytes(compiled.as_text())
  return plan


def candidates(c: Config, num_devices: int) -> list[Config]:
  """Every (data, model) split, ZeRO stage and remat the config allows."""
  out = []
  for model in (m for m in range(1, num_devices + 1) if num_devices % m == 0):
    for zero in range(4):
      for remat in (Remat.NONE, Remat.FULL):
        p = dataclasses.replace(c.parallel, data=num_devices // model, model=model,
                                pipeline=1, zero_stage=zero, remat=remat)
        cand = dataclasses.replace(c, parallel=p,
                                   model=dataclasses.replace(c.model, remat=remat))
        try:
          sharding.check_layout(cand, _mesh(cand, num_devices))
        except ConfigError:
          continue
        out.append(cand)
  return out


def _mesh(c: Config, num_devices: int):
  return sharding.make_mesh(c.parallel, jax.devices()[:num_devices])


def suggest(c: Config, num_devices: int, device_memory: float,
            max_compiles: int = 4, fallback: Plan | None = None) -> Plan | None:
  """The fitting layout with the least per-device state.

  fallback: the config's own compiled plan, returned when it fits and none of
  the compiled candidates does (less state is not less memory when activations
  dominate: a wider model axis leaves more rows of the batch on each device).

  Candidates are ranked by their exact state bytes (cheap); the first
  `max_compiles` whose state fits are compiled to add XLA's temporaries. When
  none fits with unrolled layers (model.scan_unroll > 1), the same candidates
  are tried as a rolled loop (scan_unroll=1): XLA schedules an unrolled step's
  layers as one straight-line body and keeps far more activations live (GPT-2
  124M on 64 devices with remat=full: 21.18 GiB of temporaries, 5.46 GiB rolled).
  """
  ranked = sorted(((state_bytes(cand, _mesh(cand, num_devices)), cand)
                   for cand in candidates(c, num_devices)),
                  key=lambda pc: (pc[0].state, pc[1].parallel.remat is not Remat.NONE,
                                  pc[1].parallel.model))
  unrolls = [c.model.scan_unroll] + ([1] if c.model.scan_unroll > 1 else [])
  for unroll in unrolls:
    for plan, cand in ranked[:max_compiles]:
      if plan.state > device_memory:
        break
      cand = dataclasses.replace(cand, model=dataclasses.replace(cand.model,
                                                                 scan_unroll=unroll))
      full = compile_plan(cand, _mesh(cand, num_devices))
      if full.total <= device_memory:
        return full
  if fallback is not None and fallback.total <= device_memory:
    return fallback
  return None


def format_plan(plan: Plan) -> str:
  d, m, p, z, r = plan.layout
  unroll = f', scan_unroll={plan.scan_unroll}' if plan.scan_unroll > 1 else ''
  lines = [f'layout (data, model, pipeline)=({d}, {m}, {p}), zero_stage={z}, remat={r}{unroll}',
           f'  per device: params {format_bytes(plan.params)}, optimizer state'
           f' {format_bytes(plan.opt_state)}, gradients {format_bytes(plan.grads)}']
  if plan.temp is not None:
    lines.append(f'  temporaries {format_bytes(plan.temp)}; total {format_bytes(plan.total)}')
    traffic = ', '.join(f'{k} {format_bytes(v)}' for k, v in plan.collectives.items())
    lines.append(f'  collectives per step and device: {traffic}')
  return '\n'.join(lines)


def _plan(_) -> None:
  from absl import flags

  from jaxlm import config as config_lib
  from jaxlm import cli
  f = flags.FLAGS
  c = config_lib.from_configdict(f.config)  # bad settings before any compiling
  cli.start()
  if c.model.vocab_size == 0:
    print(f'model.vocab_size=0 (from a tokenizer): using {config_lib.SYNTHETIC_VOCAB}')
  c = config_lib.resolve_vocab(c, config_lib.SYNTHETIC_VOCAB)
  n = jax.device_count()
  own = compile_plan(c, sharding.make_mesh(c.parallel))
  print(format_plan(own))
  if f.device_memory:
    best = suggest(c, n, f.device_memory * GiB, fallback=own)
    if best is own:
      print(f'suggested for {f.device_memory} GiB per device: the config\'s own layout above'
            ' (the layouts with less state that were compiled need more temporaries)')
    elif best is None:
      print(f'none of the layouts with the least state on {n} devices fits'
            f' {f.device_memory} GiB per device; raise train.grad_accum_steps,'
            ' lower data.batch_size or use more devices')
    else:
      rolled = best.scan_unroll < c.model.scan_unroll
      print(f'suggested for {f.device_memory} GiB per device'
            + (f' (model.scan_unroll=1: with {c.model.scan_unroll} unrolled layers none of'
               ' these fits, since XLA keeps every layer\'s activations of an unrolled step;'
               ' training with it would need the same)' if rolled else '') + ':')
      print(format_plan(best))


def main() -> None:
  """The command line: --config, --devices (simulated), --device_memory."""
  from absl import flags
  from ml_collections import config_flags

  from jaxlm import cli
  config_flags.DEFINE_config_file('config', None, 'Experiment config file.')
  flags.DEFINE_integer('devices', 8, 'Simulated CPU devices to plan for.')
  flags.DEFINE_float('device_memory', 0.0, 'GiB per device, to suggest a layout.')
  flags.mark_flags_as_required(['config'])
  cli.run_command(_plan, start_first=False)


if __name__ == '__main__':
  main()
