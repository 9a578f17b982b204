"""Trains from an experiment config: pretraining, or the task the config names.

  python -m jaxlm.main --config=experiments/gpt_small.py [--workdir=DIR] \
      [--config.train.steps=500 ...]

Without --workdir a fresh folder under runs/ is made; an existing one resumes.
SIGTERM or Ctrl-C saves a checkpoint and exits 0. Multi-host: every process
runs this same command (jaxlm/parallel/distributed.py). The common flags and
the one error path are jaxlm/cli.py's.
"""

from absl import flags
from ml_collections import config_flags

from jaxlm import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run folder; resumes if it exists.')
flags.mark_flags_as_required(['config'])


def _train(_):
  from jaxlm import config as config_lib
  config = config_lib.from_configdict(_CONFIG.value)  # no jax yet: bad settings at once
  cli.start()
  import jax  # (after the common start-up)

  from jaxlm.training import loop
  if jax.process_count() > 1 and not _WORKDIR.value:
    raise config_lib.ConfigError('a multi-host run needs --workdir=DIR on a filesystem'
                                 ' every process sees (the same path on each)')
  loop.run(config, _WORKDIR.value)


def main():
  cli.run_command(_train, start_first=False)


if __name__ == '__main__':
  main()
