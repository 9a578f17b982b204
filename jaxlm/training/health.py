"""Keeping a run alive and honest: stop signals, NaN/Inf steps, loss spikes.

Host-side only. The device side of the NaN guard lives in `steps.train_step`
(a non-finite step changes nothing); this module decides what the host does
about it, one step late, without stalling the device.
"""

from __future__ import annotations

import contextlib
import math
import signal

import jax
import numpy as np

from jaxlm.config import NonFinite


class StopRequest:
  """Records SIGTERM/SIGINT instead of dying, so the loop can checkpoint and exit.

  A second SIGINT (Ctrl-C twice) interrupts at once, as usual.
  """

  def __init__(self):
    self.signal_name: str | None = None

  def _handle(self, signum, frame):
    del frame
    if self.signal_name == 'SIGINT' and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.signal_name = signal.Signals(signum).name

  @contextlib.contextmanager
  def installed(self):
    previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
      yield self
    finally:
      for sig, handler in previous.items():
        signal.signal(sig, handler)

  def requested(self) -> bool:
    """Whether any process got a stop signal (all processes agree on the answer)."""
    flag = self.signal_name is not None
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      flag = bool(np.any(multihost_utils.process_allgather(np.array(flag))))
    return flag


class NonFiniteHalt(FloatingPointError):
  """Training stopped at a NaN/Inf step under train.on_nonfinite=halt."""


class LossWatch:
  """Checks each step's metrics: non-finite steps and loss spikes."""

  def __init__(self, policy: NonFinite, spike_factor: float, log, decay: float = 0.98):
    self.policy, self.spike_factor, self.log, self.decay = policy, spike_factor, log, decay
    self.mean: float | None = None
    self.seen_nonfinite = 0

  def check(self, step: int, values: dict) -> None:
    """Logs what is wrong with `step`; raises NonFiniteHalt under the halt policy."""
    count = int(values.get('nonfinite_steps', 0))
    if count > self.seen_nonfinite:
      self.seen_nonfinite = count
      what = f'loss {values["loss"]}, grad norm {values["grad_norm"]}'
      if self.policy is NonFinite.HALT:
        raise NonFiniteHalt(f'step {step} is not finite ({what})')
      self.log(f'step {step}: not finite ({what}); update skipped'
               f' ({count} skipped so far, train.on_nonfinite=skip)')
      return
    loss = values['loss']
    if self.spike_factor and self.mean is not None and loss > self.spike_factor * self.mean:
      self.log(f'loss spike at step {step}: {loss:.4f} is {loss / self.mean:.1f}x the'
               f' running mean {self.mean:.4f} (train.spike_factor={self.spike_factor})')
    if math.isfinite(loss):
      self.mean = loss if self.mean is None else self.decay * self.mean + (1 - self.decay) * loss
