"""Pipeline bubble: step time of GPipe vs circular schedules, against the formula.

  python benchmarks/pipeline_bubble.py [--devices=8] [--steps=3] [--json=FILE]

For P in {2, 4, 8} stages and M in {P, 2P, 4P} microbatches, the median step
time of GPipe and of the circular schedule (R = 2 chunks per stage) on P
simulated CPU devices, random tokens, a 16-layer model (d_model 128, batch
32 x 64), next to the bubble formula (P-1)/(M*R+P-1).

A stage in the bubble computes on a dummy input (SPMD: every device runs
every tick), so a step costs ticks x (work per tick) whether the simulated
devices get a core each or share them. GPipe takes M+P-1 ticks of N/P
layers, circular M*R+P-1 ticks of N/(P*R) layers, so the formula predicts
    t_gpipe / t_circular = R*(M+P-1) / (M*R+P-1)  = (1 - b_circular) / (1 - b_gpipe)
which the table compares with the measured ratio.
"""

import sys

from jaxlm.parallel.simulated import use_simulated_devices

if __name__ == '__main__':
  if not any(a.startswith('--devices=') for a in sys.argv):
    sys.argv.append('--devices=8')
  use_simulated_devices(sys.argv)

import json  # noqa: E402
import pathlib  # noqa: E402

import jax  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from jaxlm import config as config_lib  # noqa: E402
from jaxlm.parallel import pipeline  # noqa: E402
from jaxlm.experiments import load_configdict  # noqa: E402
import train_throughput  # noqa: E402  (its flags: --steps, --devices, --json)
from train_throughput import measure  # noqa: E402

_STAGES = flags.DEFINE_list('stages', ['2', '4', '8'], 'Pipeline sizes P.')
flags.FLAGS.set_default('steps', 3)

MODEL = {
    'model.num_layers': 16, 'model.num_heads': 8, 'model.d_model': 128,
    'model.d_ff': 512, 'model.max_len': 64, 'model.vocab_size': 256,
    'data.seq_len': 64, 'data.batch_size': 32,
}


GPT_SMALL = pathlib.Path(__file__).resolve().parents[1] / 'experiments' / 'gpt_small.py'


def config(stages: int, microbatches: int, repeats: int) -> config_lib.Config:
  return config_lib.from_configdict(load_configdict(GPT_SMALL, {
      **MODEL, 'parallel.data': 1, 'parallel.pipeline': stages,
      'parallel.microbatches': microbatches, 'parallel.pipeline_repeats': repeats,
      'parallel.pipeline_schedule': 'circular' if repeats > 1 else 'gpipe'}))


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  steps = flags.FLAGS.steps
  print('| P | M | gpipe ms/step | circular R=2 ms/step | bubble gpipe | bubble circular |'
        ' t_gpipe/t_circular predicted | measured |')
  print('|---|---|---|---|---|---|---|---|')
  rows = []
  for P in map(int, _STAGES.value):
    for M in (P, 2 * P, 4 * P):
      ms = {R: measure(config(P, M, R), steps, 1, jax.devices()[:P])['median_ms_per_step']
            for R in (1, 2)}
      gpipe, circular = (pipeline.Spec(stages=P, repeats=R, microbatches=M) for R in (1, 2))
      predicted = (1 - circular.bubble) / (1 - gpipe.bubble)
      row = {'stages': P, 'microbatches': M, 'gpipe_ms': ms[1], 'circular_ms': ms[2],
             'bubble_gpipe': gpipe.bubble, 'bubble_circular': circular.bubble,
             'ratio_predicted': predicted, 'ratio_measured': ms[1] / ms[2]}
      rows.append(row)
      print(f'| {P} | {M} | {ms[1]:.0f} | {ms[2]:.0f} | {100 * gpipe.bubble:.1f}% |'
            f' {100 * circular.bubble:.1f}% | {predicted:.2f} | {ms[1] / ms[2]:.2f} |',
            flush=True)
  if train_throughput._JSON.value:
    with open(train_throughput._JSON.value, 'w') as f:
      json.dump(rows, f, indent=2)


if __name__ == '__main__':
  app.run(main)
