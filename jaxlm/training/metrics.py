"""What a run reports: metrics.jsonl, TensorBoard events, the console, profiler traces."""

from __future__ import annotations

import json
import math
import sys

import jax

from jaxlm import rundir
from jaxlm.config import ProfileConfig


def _summary_writer():
  """tensorboardX's SummaryWriter (no TensorFlow needed), imported without PyTorch.

  tensorboardX imports torch, when installed, only to accept torch tensors:
  about 2 s of every run's start-up that we never use (we log floats). A
  None in sys.modules makes that `import torch` fail fast, as if torch were
  absent; the entry is removed again, so the user's own `import torch` works.
  """
  if 'torch' in sys.modules or 'tensorboardX' in sys.modules:
    from tensorboardX import SummaryWriter
    return SummaryWriter
  sys.modules['torch'] = None
  try:
    from tensorboardX import SummaryWriter
  finally:
    del sys.modules['torch']
  return SummaryWriter


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
      self._jsonl = rundir.open_metrics(workdir)
      self._tb = _summary_writer()(str(rundir.tensorboard_dir(workdir)))

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


def device_memory() -> dict[str, int]:
  """Bytes in use on the fullest local device, and its peak where the backend says.

  GPUs and TPUs report their allocator's statistics. XLA:CPU reports none
  (memory_stats() is None); there memory_in_use_bytes is the bytes of the live
  jax.Arrays on the device: what the program holds, without XLA's temporaries,
  so it understates, and there is no peak. Host work: call it at log steps only.
  """
  devices = jax.local_devices()
  stats = [d.memory_stats() for d in devices]
  if all(stats):
    out = {'memory_in_use_bytes': max(st['bytes_in_use'] for st in stats)}
    if all('peak_bytes_in_use' in st for st in stats):
      out['peak_memory_bytes'] = max(st['peak_bytes_in_use'] for st in stats)
    return out
  live = dict.fromkeys(devices, 0)
  for array in jax.live_arrays():
    for shard in array.addressable_shards:
      live[shard.device] += shard.data.nbytes
  return {'memory_in_use_bytes': max(live.values())}


def format_bytes(n: float) -> str:
  """1536 -> '1.50 KiB': the largest binary unit below n."""
  for unit, size in (('GiB', 2**30), ('MiB', 2**20), ('KiB', 2**10)):
    if n >= size:
      return f'{n / size:.2f} {unit}'
  return f'{int(n)} B'


class StepTrace:
  """A jax.profiler trace of train steps [start_step, start_step + num_steps).

  Written to {workdir}/profile/plugins/profile/<session>/: the xplane.pb that
  TensorBoard's profile plugin reads and a .trace.json.gz that Perfetto opens.
  The loop calls `before` and `after` around every step, and `stop` in a
  `finally`, so an early exit still closes the trace.
  """

  def __init__(self, profile: ProfileConfig, workdir: str):
    self.first, self.end = profile.start_step, profile.start_step + profile.num_steps
    self.workdir = workdir
    self.directory = str(rundir.profile_dir(workdir))
    self.active = False
    self.traced = (0, 0)  # first and last step dispatched inside the trace

  def before(self, step: int, state) -> None:
    if not self.active and self.first <= step < self.end:  # mid-window after a resume too
      jax.block_until_ready(state)  # earlier steps stay out of the trace
      jax.profiler.start_trace(self.directory)
      self.active, self.traced = True, (step, step)
    elif self.active:
      self.traced = (self.traced[0], step)

  def after(self, done: int, state) -> None:
    if self.active and done >= self.end:
      jax.block_until_ready(state)  # the traced steps finish inside the trace
      self.stop()

  def stop(self) -> None:
    if not self.active:
      return
    self.active = False
    jax.profiler.stop_trace()
    # Session folders are named by their start time: the greatest name is the newest.
    sessions = [str(p) for p in rundir.profile_dir(self.workdir).glob('plugins/profile/*')]
    where = max(sessions) if sessions else self.directory
    log(f'profile of steps {self.traced[0]}..{self.traced[1]} -> {where}; view it with'
        f' `tensorboard --logdir {self.workdir}` (Profile tab) or open its .trace.json.gz'
        ' at ui.perfetto.dev')


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
