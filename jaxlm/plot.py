"""Loss curves of training runs, drawn to one PNG.

  python -m jaxlm.plot RUN_DIR [RUN_DIR ...] --out=loss.png [--title=TEXT]

Each run folder's metrics.jsonl (jaxlm/training/metrics.py) gives its train loss
(`loss`, solid line) and eval loss (`eval_loss`, dashed with markers) against
`step`, on linear axes, one colour per run, named by the run folder. After a
resume a step may be logged twice: the last value of each metric at each step
wins (a train row and an eval row at the same step are both kept). A line
that is not JSON, such as one cut short by a crash, is skipped with a warning.

Drawn with matplotlib's Agg canvas, never pyplot: no display is needed and a
notebook's own matplotlib backend is left alone. No jax import: it is quick.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxlm import rundir

METRICS_FILE = rundir.METRICS_FILE
TRAIN_KEY, EVAL_KEY = 'loss', 'eval_loss'
_NONFINITE = {'nan', 'inf', '-inf'}  # how metrics.jsonl writes non-finite floats


class MetricsError(ValueError):
  """A run folder whose metrics cannot be plotted; the message names the fix."""


def _value(v) -> float | None:
  """A plottable float, or None for what is not a scalar (e.g. a confusion matrix)."""
  if isinstance(v, bool):
    return None
  if isinstance(v, (int, float)):
    return float(v)
  if isinstance(v, str) and v.lower() in _NONFINITE:
    return float(v)
  return None


def _warn(message: str) -> None:
  print(f'warning: {message}', file=sys.stderr)


def read_metrics(run_dir: str) -> dict[str, list[tuple[int, float]]]:
  """Metric name -> [(step, value)] sorted by step, the last value of each step kept."""
  file = rundir.metrics_file(run_dir)
  if not rundir.exists(run_dir):
    raise MetricsError(f'{run_dir} does not exist; pass the folder of a training run'
                       ' (python -m jaxlm.main --workdir=...)')
  if not file.exists():
    raise MetricsError(f'{run_dir} holds no {METRICS_FILE}; pass the folder of a training'
                       ' run, or train until it logs a step (train.log_every)')
  rows = rundir.read_metric_rows(
      run_dir, on_skip=lambda number, why: _warn(f'{file} line {number} {why}; skipped'))
  if not rows:
    raise MetricsError(f'{file} is empty (no readable rows); train {run_dir} until it'
                       ' logs a step (train.log_every), or pass another run folder')
  by_key: dict[str, dict[int, float]] = {}
  for row in rows:
    for key, raw in row.items():
      value = _value(raw)
      if key != 'step' and value is not None:
        by_key.setdefault(key, {})[row['step']] = value  # a later row overwrites
  return {key: sorted(steps.items()) for key, steps in by_key.items()}


def _labels(run_dirs: list[str]) -> list[str]:
  """Each run's folder name; the whole path where two names collide."""
  names = [os.path.basename(os.path.normpath(d)) or d for d in run_dirs]
  return [os.path.normpath(d) if names.count(n) > 1 else n for d, n in zip(run_dirs, names)]


def plot_runs(run_dirs, out_path: str, title: str | None = None) -> str:
  """Draws every run's train and eval loss on one figure, saves it as PNG; the path."""
  if isinstance(run_dirs, (str, os.PathLike)):  # one folder, not its characters
    run_dirs = [run_dirs]
  run_dirs = [str(d) for d in run_dirs]
  if not run_dirs:
    raise MetricsError('no run folders given; pass at least one RUN_DIR')
  return _draw(run_dirs, [read_metrics(d) for d in run_dirs], str(out_path), title)


def _draw(run_dirs: list[str], metrics: list[dict], out_path: str, title: str | None) -> str:
  for d, m in zip(run_dirs, metrics):
    if not m.get(TRAIN_KEY) and not m.get(EVAL_KEY):
      raise MetricsError(f'{rundir.metrics_file(d)} holds no "{TRAIN_KEY}" or'
                         f' "{EVAL_KEY}" values; pass the folder of a jaxlm training run')

  fig = Figure(figsize=(8, 5), dpi=100)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  colors = [f'C{i % 10}' for i in range(len(run_dirs))]
  for label, m, color in zip(_labels(run_dirs), metrics, colors):
    if m.get(TRAIN_KEY):
      steps, values = zip(*m[TRAIN_KEY])
      ax.plot(steps, values, '-', color=color, label=f'{label} train')
    if m.get(EVAL_KEY):
      steps, values = zip(*m[EVAL_KEY])
      ax.plot(steps, values, '--o', color=color, markersize=4, label=f'{label} eval')
  ax.set_xlabel('step')
  ax.set_ylabel('loss (nats per token)')
  ax.set_title(title if title is not None else 'loss')
  ax.grid(True, alpha=0.3)
  ax.legend()
  fig.tight_layout()
  parent = os.path.dirname(os.path.abspath(out_path))
  os.makedirs(parent, exist_ok=True)
  fig.savefig(out_path, format='png')
  return out_path


def _summary(run_dir: str, m: dict) -> str:
  """The last train and eval loss of a run, one line."""
  parts = []
  for key, name in ((TRAIN_KEY, 'train'), (EVAL_KEY, 'eval')):
    if m.get(key):
      step, value = m[key][-1]
      shown = f'{value:.4f}' if math.isfinite(value) else str(value)
      parts.append(f'{name} loss {shown} at step {step}')
  return f'{run_dir}: ' + ', '.join(parts)


def _usage_error(message):
  """argparse's usage errors as the one `error:` line every jaxlm command prints."""
  print(f'error: {message}; see python -m jaxlm.plot --help', file=sys.stderr)
  sys.exit(1)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m jaxlm.plot',
      description='Train (solid) and eval (dashed) loss of training runs, as one PNG.')
  parser.add_argument('run_dirs', nargs='+', metavar='RUN_DIR', help='a training run folder')
  parser.add_argument('--out', required=True, help='the PNG to write, e.g. loss.png')
  parser.add_argument('--title', default=None, help='the figure title (default: loss)')
  parser.error = _usage_error
  args = parser.parse_args(argv)
  try:
    metrics = [read_metrics(d) for d in args.run_dirs]
    out = _draw(args.run_dirs, metrics, args.out, args.title)
  except (MetricsError, OSError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  for d, m in zip(args.run_dirs, metrics):
    print(_summary(d, m))
  print(f'wrote {out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
