"""Per-device memory and step time across (data, model) x ZeRO layouts.

  python benchmarks/layout_sweep.py --config=experiments/gpt_small.py \
      [--devices=8] [--steps=5] [--zero=0,1,2,3] [--config.x.y=V ...]

Runs on simulated CPU devices (synthetic tokens, no dataset). Memory is per
device: parameters + optimizer state + gradients (exact, from shardings) and
XLA's temporaries. On one CPU the simulated devices share the cores, so step
times compare layouts' overheads, not real multi-chip speed.
"""

import sys

from jaxlm.parallel.simulated import use_simulated_devices

if __name__ == '__main__':
  use_simulated_devices(sys.argv)

import dataclasses  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from jaxlm import config as config_lib, plan  # noqa: E402
from jaxlm.parallel import sharding  # noqa: E402
from jaxlm.training import steps as steps_lib  # noqa: E402
from jaxlm.training.metrics import format_bytes  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.')
flags.DEFINE_integer('devices', 8, 'Simulated CPU devices.')
_STEPS = flags.DEFINE_integer('steps', 5, 'Timed steps per layout.')
_ZERO = flags.DEFINE_list('zero', ['0', '1', '2', '3'], 'ZeRO stages to sweep.')


def step_time(c, mesh, steps: int) -> float:
  """Median seconds per train step on synthetic tokens."""
  with sharding.activate(mesh):
    s = steps_lib.build(c, mesh)
    state = s.init()
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, c.model.vocab_size, (c.data.batch_size, c.data.seq_len + 1),
                          dtype=np.int32)
    batch = jax.device_put({'inputs': tokens[:, :-1], 'targets': tokens[:, 1:]},
                           sharding.batch_sharding(mesh))
    train = s.train.lower(state, batch).compile()
    state, metrics = train(state, batch)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
      t = time.perf_counter()
      state, metrics = train(state, batch)
      jax.block_until_ready(metrics)
      times.append(time.perf_counter() - t)
  return float(np.median(times))


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  c = config_lib.from_configdict(_CONFIG.value)
  if c.model.vocab_size == 0:
    print(f'model.vocab_size=0 (from a tokenizer): using {config_lib.SYNTHETIC_VOCAB}')
  c = config_lib.resolve_vocab(c, config_lib.SYNTHETIC_VOCAB)
  n = jax.device_count()
  print(f'{_CONFIG.value.model.num_layers} layers, d_model {c.model.d_model},'
        f' batch {c.data.batch_size} x {c.data.seq_len}, {n} simulated devices')
  print('| data | model | zero | params+opt+grads | temporaries | total | ms/step |')
  print('| ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
  for model in (m for m in (1, 2, 4, 8) if n % m == 0):
    for zero in map(int, _ZERO.value):
      p = dataclasses.replace(c.parallel, data=n // model, model=model, zero_stage=zero)
      cand = dataclasses.replace(c, parallel=p)
      mesh = sharding.make_mesh(p)
      try:
        sharding.check_layout(cand, mesh)
      except config_lib.ConfigError as e:
        print(f'| {n // model} | {model} | {zero} | skipped: {e} |')
        continue
      pl = plan.compile_plan(cand, mesh)
      ms = 1e3 * step_time(cand, mesh, _STEPS.value)
      print(f'| {n // model} | {model} | {zero} | {format_bytes(pl.state)} |'
            f' {format_bytes(pl.temp)} | {format_bytes(pl.total)} | {ms:.1f} |', flush=True)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main)
