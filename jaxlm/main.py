"""Trains a GPT from an experiment config.

  python -m jaxlm.main --config=experiments/gpt_small.py [--workdir=DIR] \
      [--config.train.steps=500 ...]

Without --workdir a fresh folder under runs/ is made; an existing one resumes.
SIGTERM or Ctrl-C saves a checkpoint and exits 0. Multi-host: see
jaxlm/parallel/distributed.py (every process runs this same command).
"""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from jaxlm import config as config_lib  # noqa: E402
from jaxlm.parallel import distributed  # noqa: E402
from jaxlm.training import loop as train  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run folder; resumes if it exists.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None,
                                   'Multi-host: HOST:PORT of process 0.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Multi-host: process count.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'Multi-host: this process, 0-based.')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False, 'Multi-host with the cluster detected (TPU pod, SLURM, ...).')
_CACHE_DIR = flags.DEFINE_string(
    'compilation_cache_dir', os.path.join('~', '.cache', 'jaxlm', 'xla'),
    "JAX's persistent compilation cache: a second launch loads the compiled train"
    " step instead of compiling it. '' turns it off.")
flags.mark_flags_as_required(['config'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)  # Orbax logs every file at INFO
  if _CACHE_DIR.value:
    import jax  # noqa: PLC0415  (after absl parsed the flags)
    jax.config.update('jax_compilation_cache_dir', os.path.expanduser(_CACHE_DIR.value))
  try:
    config = config_lib.from_configdict(_CONFIG.value)
    if distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                              auto=_DISTRIBUTED.value) and not _WORKDIR.value:
      raise config_lib.ConfigError('a multi-host run needs --workdir=DIR on a filesystem'
                                   ' every process sees (the same path on each)')
    train.run(config, _WORKDIR.value)
  except (config_lib.ConfigError, FloatingPointError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
