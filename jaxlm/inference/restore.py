"""A run folder restored for inference: its config, tokenizer and newest readable parameters.

`load_run` is what `python -m jaxlm.sample`, `python -m jaxlm.evaluate` and
`jaxlm.load` use; `python -m jaxlm.hf export` uses `restore_newest` too. The
parameters land on a mesh of all local devices in the training layout:
tensor parallel as the run was when the devices allow it, without pipeline
stages or ZeRO.

Fall-back: when the newest checkpoint cannot be read (a truncated file, a
disk that filled up while saving), the one before it is used and one line on
stderr says so,

  warning: checkpoint 8 is unreadable (ValueError: OUT_OF_RANGE: ...); using checkpoint 4

by the training loop's rule (`newest_readable` in jaxlm/training/checkpoint.py),
except that nothing is moved: inference never changes a run folder. A step
asked for by number is that step or a one-line error.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Callable, TypeVar

import jax
import orbax.checkpoint as ocp

from jaxlm import config as config_lib
from jaxlm import rundir
from jaxlm.config import Config, ConfigError, NonFinite, Remat, Schedule
from jaxlm.data import tokenizers
from jaxlm.inference import quantize
from jaxlm.model.gpt import GPT
from jaxlm.parallel import sharding
from jaxlm.training import steps
from jaxlm.training.checkpoint import newest_readable

QUANTIZE = ('none', 'int8')
DTYPES = ('float32', 'bfloat16', 'float16')
T = TypeVar('T')

# Settings jaxlm gained after a run folder may have been written. None shapes
# the parameters or changes what inference computes; these are the values
# that reproduce how such a run behaved.
LATER_SETTINGS = {
    'train': {'on_nonfinite': NonFinite.SKIP, 'spike_factor': 0.0},
    'parallel': {'zero_stage': 0, 'remat': Remat.NONE, 'microbatches': 1,
                 'pipeline_schedule': Schedule.GPIPE, 'pipeline_repeats': 1},
}


@dataclasses.dataclass(frozen=True)
class Run:
  """A restored run folder."""
  config: Config
  model: GPT
  params: dict  # float32, or int8 QArrays with quantize_to='int8'
  tokenizer: tokenizers.Tokenizer | None  # None: the run has none (an imported GPT-2)
  step: int
  mesh: jax.sharding.Mesh


def read_config(workdir: str) -> Config:
  """The run folder's config.json as a checked Config (LATER_SETTINGS fill what it lacks)."""
  raw = rundir.read_config_dict(workdir)
  for section, values in LATER_SETTINGS.items():
    for key, value in values.items():
      raw.setdefault(section, {}).setdefault(key, value)
  c = config_lib.from_configdict(raw)
  if c.task != 'lm':
    raise ConfigError(f'--workdir={workdir} is a {c.task} run (its config has a classifier'
                      ' section); pass a language-model run folder (python -m jaxlm.main)')
  return c


def inference_mesh(c: Config, devices=None) -> jax.sharding.Mesh:
  """The devices (default: all): the run's model axis if it divides them, the rest on data."""
  devices = jax.devices() if devices is None else devices
  model = c.parallel.model if c.parallel.model > 0 else 1
  if len(devices) % model:
    model = 1
  p = dataclasses.replace(c.parallel, data=-1, model=model, pipeline=1, zero_stage=0)
  return sharding.make_mesh(p, devices)


def reader(directory: str) -> ocp.CheckpointManager:
  """An Orbax manager that only reads jaxlm checkpoints: it creates, moves and deletes nothing."""
  return ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(create=False),
      item_handlers={'state': ocp.PyTreeCheckpointHandler(),
                     'meta': ocp.JsonCheckpointHandler()})


def restore_params(directory: str, step: int, model: GPT, mesh, seq_len: int):
  """Only the parameters of a saved TrainState, placed in the training layout."""
  boxed = steps.abstract_params(model, seq_len)
  shardings = sharding.mesh_shardings(boxed, mesh)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          sharding.unbox_shapes(boxed), shardings)
  restore_args = jax.tree.map(lambda s: ocp.ArrayRestoreArgs(sharding=s), shardings)
  args = ocp.args.PyTreeRestore(item={'params': abstract}, restore_args={'params': restore_args},
                                partial_restore=True)
  with reader(directory) as manager:
    return manager.restore(step, args=ocp.args.Composite(state=args))['state']['params']


def warn(message: str) -> None:
  """One line on stderr (process 0 only)."""
  if jax.process_index() == 0:
    print(f'warning: {message}', file=sys.stderr, flush=True)


def restore_newest(workdir: str, restore: Callable[[int], T], *, step: int | None = None,
                   say: Callable[[str], None] = warn) -> tuple[int, T]:
  """(step, restore(step)) of the newest readable checkpoint, or of `step`; one-line errors."""
  directory = str(rundir.checkpoints_dir(workdir))
  saved = rundir.checkpoint_steps(workdir)
  if not saved:
    raise ConfigError(f'--workdir={workdir} holds no checkpoint in checkpoints/; train it'
                      ' until it saves one (train.checkpoint_every) or pass another run folder')
  if step is not None:
    if step not in saved:
      raise ConfigError(f'{directory} has no checkpoint {step} (saved: '
                        f'{", ".join(map(str, saved))}); pass one of them, or no step for'
                        ' the newest')
    _, value, _ = newest_readable([step], restore, directory)  # one step: no fall-back
    return step, value
  found, value, unreadable = newest_readable(saved, restore, directory)
  if unreadable is not None:
    say(f'checkpoint {unreadable[0]} is unreadable ({unreadable[1]}); using checkpoint {found}')
  return found, value


def load_run(workdir: str, *, quantize_to: str = 'none', step: int | None = None,
             dtype: str | None = None, tokenizer_required: bool = True,
             say: Callable[[str], None] = warn) -> Run:
  """Config, tokenizer and parameters of the newest readable checkpoint (or `step`).

  dtype sets the compute dtype (model.dtype; parameters stay float32).
  One-line ConfigErrors for anything wrong with the folder or the arguments.
  """
  if quantize_to not in QUANTIZE:
    raise ConfigError(f'--quantize={quantize_to} is not one of: {", ".join(QUANTIZE)}')
  if dtype is not None and dtype not in DTYPES:
    raise ConfigError(f'dtype={dtype!r} is not one of: {", ".join(DTYPES)} (None: the'
                      " run's model.dtype)")
  c = read_config(workdir)
  if dtype is not None:
    c = dataclasses.replace(c, model=dataclasses.replace(c.model, dtype=dtype))
  tokenizer = (tokenizers.load_tokenizer(workdir)
               if tokenizer_required or rundir.has_tokenizer(workdir) else None)
  model = GPT(c.model)
  mesh = inference_mesh(c)
  directory = str(rundir.checkpoints_dir(workdir))
  with sharding.activate(mesh):
    found, params = restore_newest(
        workdir, lambda s: restore_params(directory, s, model, mesh, c.data.seq_len),
        step=step, say=say)
    if quantize_to == 'int8':
      params = quantize.quantize(params)
  return Run(c, model, params, tokenizer, found, mesh)
