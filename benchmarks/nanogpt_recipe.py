"""nanoGPT's own CPU recipe for shakespeare_char, run end to end by jaxlm.

  python benchmarks/nanogpt_recipe.py [--manual_dir=DIR] \
      [--workdir=DIR] [--json=FILE] [--config.x.y=V ...]

nanoGPT's README ("I only have a macbook"):

  python train.py config/train_shakespeare_char.py --device=cpu --compile=False \
      --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 \
      --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0

On the development machine (2 CPU cores) that reaches validation loss 1.886 in
115 s at a median 59 ms/step: 768 tokens a step, about 13,000 tokens/s.

experiments/gpt_small.py is that recipe (model, batch, schedule, AdamW); this
runs it through `jaxlm.training.loop.run` with nanoGPT's eval cadence (every 250
steps) and no sample at the end. It prints the median ms/step over the log
windows that hold no evaluation or checkpoint, tokens/s from that median, the
whole wall time (compile, evaluations and checkpoints included; TFDS's
one-off preparation of the dataset is done before the clock starts, as
nanoGPT's prepare.py is), and the final validation loss.
"""

import json
import os
import sys
import tempfile
import time

from absl import app, flags, logging
from ml_collections import config_flags

NANOGPT = {'val_loss': 1.886, 'wall_s': 115.0, 'median_ms_per_step': 59.0}

_CONFIG = config_flags.DEFINE_config_file(
    'config', os.path.join(os.path.dirname(__file__), '..', 'experiments', 'gpt_small.py'),
    'The recipe (experiments/gpt_small.py).')
_MANUAL_DIR = flags.DEFINE_string(
    'manual_dir', '', 'TFDS manual_dir holding input.txt (default: the copy bundled with jaxlm).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run folder (default: a fresh temporary one).')
_JSON = flags.DEFINE_string('json', None, 'Also write the figures to this JSON file.')


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  import jaxlm  # after absl parsed the flags
  from jaxlm import config as config_lib
  from jaxlm.data import sources  # (to let TFDS prepare the data before the clock starts)

  cd = _CONFIG.value
  cd.train.eval_every = 250
  cd.train.eval_steps = 20
  cd.train.log_every = 50
  cd.train.sample_tokens = 0
  if _MANUAL_DIR.value:
    cd.data.manual_dir = os.path.abspath(_MANUAL_DIR.value)
  c = config_lib.from_configdict(cd)
  for split in (c.data.train_split, c.data.eval_split):  # TFDS prepares once, untimed
    next(iter(sources.documents(c.data, split)))
  workdir = _WORKDIR.value or tempfile.mkdtemp(prefix='nanogpt_recipe_')
  if os.path.exists(os.path.join(workdir, 'checkpoints')):
    sys.exit(f'error: --workdir={workdir} already holds a run; pass a new folder')

  start = time.perf_counter()
  result = jaxlm.train(c, workdir)  # what python -m jaxlm.main runs
  wall_s = time.perf_counter() - start

  t = c.train
  busy = {s for s in range(0, t.steps + 1)
          if s % t.eval_every == 0 or s % t.checkpoint_every == 0}
  per_step_ms = []
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    for line in f:
      row = json.loads(line)
      if 'tokens_per_sec' not in row:
        continue
      step = row['step']
      window = range(step - t.log_every, step)  # work done after these steps' logs
      if step > t.log_every and not busy.intersection(window):
        per_step_ms.append(1e3 * c.data.batch_size * c.data.seq_len / row['tokens_per_sec'])
  per_step_ms.sort()
  median_ms = per_step_ms[len(per_step_ms) // 2]
  tokens_s = 1e3 * c.data.batch_size * c.data.seq_len / median_ms
  nano_tokens_s = 1e3 * c.data.batch_size * c.data.seq_len / NANOGPT['median_ms_per_step']
  r = {'median_ms_per_step': median_ms, 'tokens_per_sec': tokens_s, 'wall_s': wall_s,
       'val_loss': result['eval_loss'], 'windows': len(per_step_ms),
       'speedup_vs_nanogpt': tokens_s / nano_tokens_s, 'nanogpt': NANOGPT, 'workdir': workdir}
  print(f'jaxlm:   median {median_ms:.1f} ms/step | {tokens_s:,.0f} tokens/s |'
        f' wall {wall_s:.0f} s | validation loss {r["val_loss"]:.4f}')
  print(f'nanoGPT: median {NANOGPT["median_ms_per_step"]:.1f} ms/step | {nano_tokens_s:,.0f}'
        f' tokens/s | wall {NANOGPT["wall_s"]:.0f} s | validation loss {NANOGPT["val_loss"]:.3f}')
  print(f'tokens/s: {r["speedup_vs_nanogpt"]:.2f}x nanoGPT (target >= 2x);'
        f' loss {"<=" if r["val_loss"] <= NANOGPT["val_loss"] else ">"} {NANOGPT["val_loss"]}')
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump(r, f, indent=2)


if __name__ == '__main__':
  app.run(main)
