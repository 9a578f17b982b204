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
"""

from __future__ import annotations

import os
import time

import jax
import orbax.checkpoint as ocp

from jaxlm.config import EXECUTION_ONLY, ConfigError
from jaxlm.training.metrics import log

_TMP_MARK = '.orbax-checkpoint-tmp'


class Checkpointer:
  """Saves every `every` steps and at the end; keeps the last `keep`."""

  def __init__(self, workdir: str, *, keep: int, every: int):
    self.directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
    self.aside = os.path.abspath(os.path.join(workdir, 'checkpoints_set_aside'))
    self.every = every
    self._set_aside_unfinished()
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=True),
    )

  def _move_aside(self, name: str) -> str:
    target = os.path.join(self.aside, f'{name}-{time.strftime("%Y%m%d-%H%M%S")}')
    if jax.process_index() == 0:
      os.makedirs(self.aside, exist_ok=True)
      os.rename(os.path.join(self.directory, name), target)
    _sync('jaxlm_checkpoint_set_aside')
    return target

  def _set_aside_unfinished(self) -> None:
    """Moves the temporary folders of saves that never finished out of the way."""
    if not os.path.isdir(self.directory):
      return
    for name in sorted(os.listdir(self.directory)):
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
      for key, value in config[section].items():
        if key not in EXECUTION_ONLY and saved[section].get(key) != value:
          raise ConfigError(
              f'{self.directory} holds a checkpoint (step {step}) of a different model:'
              f' {section}.{key}={saved[section].get(key)!r} there, {value!r} now;'
              ' use a new --workdir or the original setting')
    if saved['data']['tokenizer'] != config['data']['tokenizer']:
      raise ConfigError(
          f'{self.directory} was trained with data.tokenizer='
          f'{saved["data"]["tokenizer"]!r}; use a new --workdir or that tokenizer')

  def restore_latest(self, abstract_state):
    """(step, state) of the newest checkpoint that restores; (None, None) if none.

    An unreadable newest checkpoint is moved aside when the one before it
    restores. If that one fails too, the cause is not one bad file (more
    likely a changed state layout): nothing is moved and the error is raised.
    """
    steps = sorted(self._manager.all_steps(), reverse=True)
    if not steps:
      return None, None
    try:
      return steps[0], self.restore(steps[0], abstract_state)
    except Exception as e:  # noqa: BLE001  any reason it cannot be read
      error = e
    if len(steps) == 1:
      raise ConfigError(
          f'checkpoint {steps[0]} in {self.directory} cannot be restored'
          f' ({type(error).__name__}: {str(error).splitlines()[0][:200]}); move it away'
          ' to start afresh, or use the code version that wrote it')
    try:
      state = self.restore(steps[1], abstract_state)
    except Exception:  # noqa: BLE001
      raise ConfigError(
          f'checkpoints {steps[0]} and {steps[1]} in {self.directory} cannot be restored'
          f' ({type(error).__name__}: {str(error).splitlines()[0][:200]}); was the state'
          ' layout changed? Use the code version that wrote them or a new --workdir'
          ) from None
    target = self._move_aside(str(steps[0]))
    self._manager.reload()
    log(f'checkpoint {steps[0]} is unreadable ({type(error).__name__}); moved to'
        f' {target}; resuming from checkpoint {steps[1]}')
    return steps[1], state

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
