"""Orbax checkpoints of the TrainState under `{workdir}/checkpoints/{step}`.

Each checkpoint holds the state (params, optimizer state, step, RNG) and a
JSON record of the config that wrote it. The data position is the step: a
batch is a pure function of (seed, step), so restoring the step restores it.

Saving is asynchronous: the state is copied off the device and written in
the background while training goes on. Orbax writes into a temporary folder
and renames it when complete, so a checkpoint is never visible half-written.
A save cut short by a kill leaves only that temporary folder; the next run
moves it to `{workdir}/checkpoints_set_aside/` and says so. A finished
checkpoint that cannot be read is moved there too, and the one before it is
used. Nothing is deleted except by `keep`.

`newest_readable` is that fall-back for anyone who restores: training here
(which moves the unreadable checkpoint aside) and inference
(jaxlm/inference/restore.py, which moves nothing).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Callable, Iterable, TypeVar

import jax
import orbax.checkpoint as ocp
from etils import epath

from jaxlm import rundir
from jaxlm import config as config_lib
from jaxlm.config import EXECUTION_ONLY, ConfigError
from jaxlm.training.metrics import log

_TMP_MARK = '.orbax-checkpoint-tmp'
T = TypeVar('T')


def describe_error(e: BaseException) -> str:
  """A library error in one short line: its type and the gist, without TensorStore's spec."""
  text = str(e).strip()
  text = text.splitlines()[0] if text else ''
  text = text.split(' [tensorstore_spec')[0].strip()
  parts = text.split(': ')
  if len(text) > 160 and len(parts) > 2:  # "CODE: Error opening ...: ...: what went wrong"
    text = f'{parts[0]}: {parts[-1]}'
  if len(text) > 200:
    text = text[:197] + '...'
  return f'{type(e).__name__}: {text}' if text else type(e).__name__


class _LateReadReports(logging.Filter):
  """asyncio's "exception was never retrieved" reports of the reads a failed restore left."""

  def filter(self, record: logging.LogRecord) -> bool:
    text = record.getMessage()
    return not ('never retrieved' in text and ('orbax' in text or 'tensorstore' in text))


def _quiet_failed_restore_reports() -> None:
  """Keeps what a caught restore failure leaves behind off the terminal.

  When one read fails, Orbax closes its asyncio loop while TensorStore is
  still finishing the others: each late callback reports "Event loop is
  closed" through sys.unraisablehook, and reads that failed unawaited are
  logged by asyncio as "exception was never retrieved", a traceback per array
  on stderr, though the error itself was caught and summarised. Only those
  reports are dropped; anything else goes where it went before.
  """
  previous = sys.unraisablehook
  if getattr(previous, 'jaxlm_quiet', False):
    return

  def hook(args):
    if isinstance(args.exc_value, RuntimeError) and str(args.exc_value) == 'Event loop is closed':
      return
    previous(args)

  hook.jaxlm_quiet = True
  sys.unraisablehook = hook
  logging.getLogger('asyncio').addFilter(_LateReadReports())


def newest_readable(steps: Iterable[int], restore: Callable[[int], T], where: str
                    ) -> tuple[int, T, tuple[int, str] | None]:
  """(step, restore(step), None) for the newest step; if that one fails, the one before it.

  Then the third item is (the unreadable step, why in one line). Only the two
  newest are tried: when both fail the cause is not one bad file (more likely
  a changed state layout), and a ConfigError says so. Library errors are
  summarised in the message, never printed.
  """
  steps = sorted(steps, reverse=True)
  if not steps:
    raise ValueError('newest_readable needs at least one step')
  _quiet_failed_restore_reports()
  try:
    return steps[0], restore(steps[0]), None
  except Exception as e:  # noqa: BLE001  any reason it cannot be read
    why = describe_error(e)
  if len(steps) == 1:
    raise ConfigError(
        f'checkpoint {steps[0]} in {where} cannot be restored ({why}); use the code version'
        ' that wrote it, or move it away (training then starts afresh)')
  try:
    value = restore(steps[1])
  except Exception:  # noqa: BLE001
    raise ConfigError(
        f'checkpoints {steps[0]} and {steps[1]} in {where} cannot be restored ({why}); was'
        ' the state layout changed? Use the code version that wrote them or a new --workdir'
        ) from None
  return steps[1], value, (steps[0], why)


class Checkpointer:
  """Saves every `every` steps and at the end; keeps the last `keep`."""

  def __init__(self, workdir: str, *, keep: int, every: int):
    self.directory = str(rundir.checkpoints_dir(workdir))
    self.aside = rundir.set_aside_dir(workdir)
    self.every = every
    self._set_aside_unfinished()
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=True),
    )

  def _move_aside(self, name: str) -> str:
    target = self.aside / f'{name}-{time.strftime("%Y%m%d-%H%M%S")}'
    if jax.process_index() == 0:
      self.aside.mkdir(parents=True, exist_ok=True)
      (epath.Path(self.directory) / name).rename(target)
    _sync('jaxlm_checkpoint_set_aside')
    return str(target)

  def _set_aside_unfinished(self) -> None:
    """Moves the temporary folders of saves that never finished out of the way."""
    directory = epath.Path(self.directory)
    if not directory.is_dir():
      return
    for name in sorted(p.name for p in directory.iterdir()):
      if _TMP_MARK in name:
        target = self._move_aside(name)
        log(f'checkpoint {name.split(".")[0]} was never finished (the run was stopped while'
            f' saving it); moved to {target}')

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def saved_config(self, step: int) -> dict:
    """The config JSON stored with checkpoint `step`."""
    restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return restored['meta']['config']

  def check_compatible(self, config: dict) -> None:
    """Raises ConfigError if the latest checkpoint's model differs from `config`."""
    step = self.latest_step()
    if step is None:
      return
    try:
      saved = self.saved_config(step)
    except Exception:  # noqa: BLE001  unreadable: restore_latest deals with it
      return
    for section in ('model',):
      # A setting newer than the checkpoint's run folder has its default there.
      defaults = config_lib.defaults(config_lib.ModelConfig)
      for key, value in config[section].items():
        there = saved[section].get(key, defaults.get(key))
        if key not in EXECUTION_ONLY and there != value:
          raise ConfigError(
              f'{self.directory} holds a checkpoint (step {step}) of a different model:'
              f' {section}.{key}={there!r} there, {value!r} now;'
              ' use a new --workdir or the original setting')
    if saved['data']['tokenizer'] != config['data']['tokenizer']:
      raise ConfigError(
          f'{self.directory} was trained with data.tokenizer='
          f'{saved["data"]["tokenizer"]!r}; use a new --workdir or that tokenizer')

  def restore_latest(self, abstract_state):
    """(step, state) of the newest checkpoint that restores; (None, None) if none.

    An unreadable newest checkpoint is moved aside when the one before it
    restores (newest_readable); if that one fails too, nothing is moved and a
    ConfigError is raised.
    """
    steps = self._manager.all_steps()
    if not steps:
      return None, None
    step, state, unreadable = newest_readable(
        steps, lambda s: self.restore(s, abstract_state), self.directory)
    if unreadable is not None:
      bad, why = unreadable
      target = self._move_aside(str(bad))
      self._manager.reload()
      log(f'checkpoint {bad} is unreadable ({why}); moved to {target}; resuming from'
          f' checkpoint {step}')
    return step, state

  def restore(self, step: int, abstract_state):
    """Restores the state into the shardings carried by `abstract_state`."""
    restored = self._manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
    return restored['state']

  def due(self, step: int, *, force: bool = False) -> bool:
    """Whether `save` would write this step: a multiple of `every`, or forced, and new."""
    return (force or step % self.every == 0) and step not in self._manager.all_steps()

  def save(self, step: int, state, config: dict, *, force: bool = False) -> bool:
    """Saves at multiples of `every` (or when forced); never overwrites a step."""
    if not self.due(step, force=force):
      return False
    return self._manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                meta=ocp.args.JsonSave({'config': config, 'step': step})),
        force=True)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)
