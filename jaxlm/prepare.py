"""Tokenizes a corpus once into a dataset folder that every run and host then reads.

  python -m jaxlm.prepare --config=experiments/gpt_small.py --out=DATASET_DIR \
      [--config.data.source=files --config.data.train_files='corpus/*.txt' ...] \
      [--workers=N] [--num_shards=N --shard_index=I] [--shard_tokens=N]

The config is an experiment's (only its data section is read). Train with
`--config.data.dataset_dir=DATASET_DIR`. Interrupted, the same command
continues where it stopped (complete pieces are kept, the rest redone with
the same bytes). On many machines, start it N times with --num_shards=N and
each --shard_index, all writing to one --out (shared storage or gs://); the
last to finish writes the manifest. jaxlm/data/prepare.py has the details.
"""

from absl import flags
from ml_collections import config_flags

from jaxlm import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.')
_OUT = flags.DEFINE_string('out', None, 'Dataset folder to write (new, or one to complete).')
_WORKERS = flags.DEFINE_integer('workers', 0, 'Processes to tokenize with (threads for byte'
                                ' lines/jsonl); 0: one per core (1 process below 32 MB).')
_NUM_SHARDS = flags.DEFINE_integer('num_shards', 1, 'Machines preparing this --out together.')
_SHARD_INDEX = flags.DEFINE_integer('shard_index', 0, 'This machine, 0-based.')
_SHARD_TOKENS = flags.DEFINE_integer('shard_tokens', 1 << 27, 'Most tokens in a shard file.')
flags.mark_flags_as_required(['config', 'out'])


def _prepare(_):
  from jaxlm import config as config_lib
  from jaxlm.data import prepare
  config = config_lib.from_configdict(_CONFIG.value)
  cli.quiet_libraries()  # (no jax: prepare never starts it)
  if not hasattr(config.data, 'seq_len'):
    raise config_lib.ConfigError('--config is a classification experiment; prepare reads'
                                 ' pretraining text (data.source tfds or files)')
  if _WORKERS.value < 0:
    raise config_lib.ConfigError(f'--workers={_WORKERS.value} must be >= 0 (0: one per core)')
  if _NUM_SHARDS.value < 1:
    raise config_lib.ConfigError(f'--num_shards={_NUM_SHARDS.value} must be >= 1')
  manifest = prepare.prepare(config.data, _OUT.value, workers=_WORKERS.value,
                             num_shards=_NUM_SHARDS.value, shard_index=_SHARD_INDEX.value,
                             shard_tokens=_SHARD_TOKENS.value)
  if manifest:
    sizes = ', '.join(f'{split} {s["documents"]:,} documents / {s["tokens"]:,} tokens'
                      for split, s in manifest['splits'].items())
    print(f'prepare: {_OUT.value} is complete (fingerprint {manifest["fingerprint"]}): {sizes};'
          f' train with --config.data.dataset_dir={_OUT.value}')


def main():
  cli.run_command(_prepare, start_first=False)


if __name__ == '__main__':
  main()
