"""Training throughput and MFU of a config, on synthetic tokens.

  python benchmarks/train_throughput.py --config=experiments/gpt_small.py \
      [--steps=50] [--warmup=5] [--devices=N] [--profile_dir=DIR] [--config.x.y=V ...]

No dataset is read (random tokens; vocab 256 when the config takes it from a
tokenizer), so it runs on images without TensorFlow. MFU's denominator is the
nominal peak of a known accelerator, or on CPU the matmul peak measured in
this run. FLOPs per token = 6N + 12·L·T·d (PaLM / nanoGPT). Peak memory is
the device allocator's high-water mark where the device reports one (GPU, TPU).
--profile_dir writes a jax.profiler trace of 3 steps after the timed ones.
"""

import sys

from jaxlm.parallel.simulated import use_simulated_devices

if __name__ == '__main__':
  use_simulated_devices(sys.argv)

import json  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from jaxlm import config as config_lib  # noqa: E402
from jaxlm.training import flops  # noqa: E402
from jaxlm.parallel import sharding  # noqa: E402
from jaxlm.training import steps as steps_lib  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.')
_STEPS = flags.DEFINE_integer('steps', 50, 'Timed steps.')
_WARMUP = flags.DEFINE_integer('warmup', 5, 'Untimed steps after compiling.')
flags.DEFINE_integer('devices', 1, 'Simulated CPU devices (CPU only).')
_JSON = flags.DEFINE_string('json', None, 'Also write the figures to this JSON file.')
_PROFILE = flags.DEFINE_string('profile_dir', None, 'Write a trace of 3 steps here.')


def measure(c: config_lib.Config, steps: int, warmup: int, devices=None,
            profile_dir=None) -> dict:
  """Compile time, per-step times and throughput of the jitted train step."""
  mesh = sharding.make_mesh(c.parallel, devices)
  d = c.data
  with sharding.activate(mesh):
    s = steps_lib.build(c, mesh)
    state = s.init()
    tokens = np.random.default_rng(0).integers(
        0, c.model.vocab_size, (d.batch_size, d.seq_len + 1), dtype=np.int32)
    batch = jax.device_put({'inputs': tokens[:, :-1], 'targets': tokens[:, 1:]},
                           sharding.batch_sharding(mesh))
    t = time.perf_counter()
    train = s.train.lower(state, batch).compile()
    compile_s = time.perf_counter() - t
    for _ in range(warmup):
      state, metrics = train(state, batch)
      jax.block_until_ready(metrics)
    per_step = []
    for _ in range(steps):  # synchronised: per-step latency
      t = time.perf_counter()
      state, metrics = train(state, batch)
      jax.block_until_ready(metrics)
      per_step.append(time.perf_counter() - t)
    t = time.perf_counter()
    previous = None
    for _ in range(steps):  # as the training loop runs: one step in flight
      state, metrics = train(state, batch)
      if previous is not None:
        jax.block_until_ready(previous)
      previous = metrics['loss']
    jax.block_until_ready(metrics)
    loop_s = time.perf_counter() - t
    if profile_dir:
      with jax.profiler.trace(profile_dir, create_perfetto_trace=True):
        for _ in range(3):
          state, metrics = train(state, batch)
        jax.block_until_ready(metrics)
  tokens_per_s = steps * d.batch_size * d.seq_len / loop_s
  flops_token = flops.flops_per_token(c.model, d.seq_len)
  peak, source = flops.peak_flops_per_second()
  return {
      'mesh': dict(mesh.shape),
      'params_M': sum(x.size for x in jax.tree.leaves(state.params)) / 1e6,
      'compile_s': compile_s, 'median_ms_per_step': 1e3 * float(np.median(per_step)),
      'tokens_per_sec': tokens_per_s, 'flops_per_token': flops_token,
      'achieved_tflops': tokens_per_s * flops_token / 1e12, 'peak_tflops': peak / 1e12,
      'peak_source': source, 'mfu': flops.mfu(tokens_per_s, flops_token, peak),
      'peak_memory_gib': _peak_memory() / 2**30, 'attention': c.model.attention,
      'scan_unroll': c.model.scan_unroll,
  }


def _peak_memory() -> float:
  """The largest allocator high-water mark over local devices (0 where unknown)."""
  stats = [d.memory_stats() or {} for d in jax.local_devices()]
  return max(s.get('peak_bytes_in_use', 0) for s in stats)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  c = config_lib.from_configdict(_CONFIG.value)
  if c.model.vocab_size == 0:
    print(f'model.vocab_size=0 (from a tokenizer): using {config_lib.SYNTHETIC_VOCAB}')
  c = config_lib.resolve_vocab(c, config_lib.SYNTHETIC_VOCAB)
  r = measure(c, _STEPS.value, _WARMUP.value, profile_dir=_PROFILE.value)
  m, d = c.model, c.data
  print(f'{m.num_layers} layers, d_model {m.d_model}, batch {d.batch_size} x {d.seq_len},'
        f' {m.dtype}, attention {m.attention}, scan_unroll {m.scan_unroll}, mesh {r["mesh"]},'
        f' {r["params_M"]:.2f}M parameters')
  print(f'compile {r["compile_s"]:.1f} s | median {r["median_ms_per_step"]:.1f} ms/step |'
        f' {r["tokens_per_sec"]:,.0f} tokens/s | {r["achieved_tflops"] * 1e3:.1f} GFLOP/s of'
        f' {r["peak_tflops"] * 1e3:.1f} peak ({r["peak_source"]}) | MFU {100 * r["mfu"]:.1f}%'
        + (f' | peak memory {r["peak_memory_gib"]:.1f} GiB' if r['peak_memory_gib'] else ''))
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump(r, f, indent=2)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main)
