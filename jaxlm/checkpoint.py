"""Orbax checkpoints of the TrainState under `{workdir}/checkpoints/{step}`.

Each checkpoint holds the state (params, optimizer state, step, RNG) and a
JSON record of the config that wrote it. The data position is the step: a
batch is a pure function of (seed, step), so restoring the step restores it.
"""

from __future__ import annotations

import os

import orbax.checkpoint as ocp

from jaxlm.config import ConfigError


class Checkpointer:
  """Saves every `every` steps and at the end; keeps the last `keep`."""

  def __init__(self, workdir: str, *, keep: int, every: int):
    self.directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
    self.every = every
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
    )

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
    saved = self.saved_config(step)
    for section in ('model',):
      for key, value in config[section].items():
        if saved[section].get(key) != value:
          raise ConfigError(
              f'{self.directory} holds a checkpoint (step {step}) of a different model:'
              f' {section}.{key}={saved[section].get(key)!r} there, {value!r} now;'
              ' use a new --workdir or the original setting')
    if saved['data']['tokenizer'] != config['data']['tokenizer']:
      raise ConfigError(
          f'{self.directory} was trained with data.tokenizer='
          f'{saved["data"]["tokenizer"]!r}; use a new --workdir or that tokenizer')

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
