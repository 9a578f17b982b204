"""Metrics out: metrics.jsonl, TensorBoard events, and the console."""

from __future__ import annotations

import json
import math
import os
import sys

import jax


class MetricWriter:
  """Writes one JSON object per call to metrics.jsonl and TensorBoard.

  Only process 0 writes. After a resume, rows for steps past the restored
  checkpoint may repeat; readers should keep the last row for each step.
  """

  def __init__(self, workdir: str):
    self.enabled = jax.process_index() == 0
    self._jsonl = None
    self._tb = None
    if self.enabled:
      self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')
      from tensorboardX import SummaryWriter  # no TensorFlow needed
      self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def write(self, step: int, values: dict) -> None:
    if not self.enabled:
      return
    row = {'step': int(step), **{k: _plain(v) for k, v in values.items()}}
    self._jsonl.write(json.dumps(row) + '\n')
    self._jsonl.flush()
    for key, value in row.items():
      if key != 'step' and isinstance(value, (int, float)):
        self._tb.add_scalar(key, value, step)
    self._tb.flush()

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tb.close()


def _plain(v):
  v = v.item() if hasattr(v, 'item') else v
  return v if not isinstance(v, float) or math.isfinite(v) else str(v)


def log(message: str) -> None:
  """Prints on process 0 only."""
  if jax.process_index() == 0:
    print(message, file=sys.stdout, flush=True)


def format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}h{m:02d}m{s:02d}s' if h else f'{m}m{s:02d}s'
