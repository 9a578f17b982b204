"""Decode speed of a config: time to first token and tokens/s, float32 vs int8 weights.

  python benchmarks/decode.py --config=experiments/gpt_small.py \
      [--batch=1,8] [--quantize=none,int8] [--prompt_len=16] [--new_tokens=48] \
      [--repeats=3] [--devices=N] [--config.x.y=V ...]

Random weights (vocab 256 when the config takes it from a tokenizer), greedy.
Time to first token (TTFT) is the jitted prefill: the prompts through the
model once, the cache filled, the first token chosen. Decode tokens/s is
batch x (new_tokens - 1) over the time of the jitted loop of one-token steps
that follows (jaxlm/inference/generate.py). Both compiled first; the median of
--repeats runs. prompt_len + new_tokens must fit in model.max_len, so no
context shift is timed. Prints a markdown table.
"""

import sys

from jaxlm.parallel.simulated import use_simulated_devices

if __name__ == '__main__':
  use_simulated_devices(sys.argv)

import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from flax import linen as nn  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from jaxlm import config as config_lib  # noqa: E402
from jaxlm.inference import generate  # noqa: E402
from jaxlm.inference import quantize  # noqa: E402
from jaxlm.parallel import sharding  # noqa: E402
from jaxlm.model.gpt import GPT  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.')
_BATCH = flags.DEFINE_list('batch', ['1', '8'], 'Batch sizes (prompts decoded together).')
_QUANTIZE = flags.DEFINE_list('quantize', ['none', 'int8'], 'Weights: none (float32), int8.')
_PROMPT_LEN = flags.DEFINE_integer('prompt_len', 16, 'Prompt tokens per row.')
_NEW_TOKENS = flags.DEFINE_integer('new_tokens', 48, 'Tokens generated per row.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed runs; the median is reported.')
flags.DEFINE_integer('devices', 1, 'Simulated CPU devices (CPU only).')


def _median_seconds(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def measure(model: GPT, params, batch: int, prompt_len: int, new_tokens: int,
            repeats: int, mesh) -> dict:
  """TTFT and decode tokens/s of one batch size, compiled first."""
  rng = np.random.default_rng(0)
  prompt = rng.integers(0, model.cfg.vocab_size, (batch, prompt_len), dtype=np.int32)
  rows = (prompt, np.full((batch,), prompt_len, np.int32), np.zeros((batch,), np.int32))
  rows = jax.device_put(rows, sharding.batch_sharding(mesh))
  sampling, seed = generate.Sampling(), np.uint32(0)
  cache_len = prompt_len + new_tokens - 1

  def first():
    return generate.prefill(params, *rows, seed, model=model, sampling=sampling,
                            cache_len=cache_len)

  first_B, cache = jax.block_until_ready(first())  # compiles

  def rest():
    return generate.decode(params, cache, first_B, *rows, seed, model=model,
                           sampling=sampling, num_tokens=new_tokens, keep=0)

  jax.block_until_ready(rest())  # compiles
  ttft = _median_seconds(first, repeats)
  loop = _median_seconds(rest, repeats)
  return {'ttft_ms': 1e3 * ttft, 'tokens_per_sec': batch * (new_tokens - 1) / loop,
          'ms_per_step': 1e3 * loop / (new_tokens - 1)}


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  c = config_lib.resolve_vocab(config_lib.from_configdict(_CONFIG.value),
                               config_lib.SYNTHETIC_VOCAB)
  m = c.model
  if _PROMPT_LEN.value + _NEW_TOKENS.value - 1 > m.max_len or _NEW_TOKENS.value < 2:
    print(f'error: --prompt_len={_PROMPT_LEN.value} + --new_tokens={_NEW_TOKENS.value}'
          f' must fit in model.max_len={m.max_len} (and new_tokens >= 2)', file=sys.stderr)
    sys.exit(1)
  model = GPT(m)
  mesh = sharding.make_mesh(c.parallel)
  print(f'{m.num_layers} layers, d_model {m.d_model}, vocab {m.vocab_size}, {m.dtype} compute,'
        f' prompt {_PROMPT_LEN.value} + {_NEW_TOKENS.value} new tokens, mesh {dict(mesh.shape)},'
        f' {jax.devices()[0].device_kind}\n')
  print('| weights | batch | param MiB | TTFT ms | decode ms/step | decode tokens/s |')
  print('| --- | ---: | ---: | ---: | ---: | ---: |')
  with sharding.activate(mesh):
    tokens = jnp.zeros((1, m.max_len), jnp.int32)
    shardings = sharding.mesh_shardings(
        jax.eval_shape(model.init, jax.random.PRNGKey(0), tokens)['params'], mesh)
    init = jax.jit(lambda: nn.meta.unbox(model.init(jax.random.PRNGKey(0), tokens)['params']),
                   out_shardings=shardings)
    fp32 = init()
    for kind in _QUANTIZE.value:
      params = quantize.quantize(fp32) if kind == 'int8' else fp32
      for batch in (int(b) for b in _BATCH.value):
        r = measure(model, params, batch, _PROMPT_LEN.value, _NEW_TOKENS.value,
                    _REPEATS.value, mesh)
        name = 'int8' if kind == 'int8' else 'float32'
        print(f'| {name} | {batch} | {quantize.nbytes(params) / 2**20:.2f} |'
              f' {r["ttft_ms"]:.1f} | {r["ms_per_step"]:.2f} | {r["tokens_per_sec"]:,.0f} |',
              flush=True)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main)
