"""Tiny configs for tests, derived from the real experiment files."""

from jaxlm import config as config_lib
from jaxlm.experiments import load_configdict

TINY = {
    'model.num_layers': 2, 'model.num_heads': 4, 'model.d_model': 32,
    'model.d_ff': 64, 'model.max_len': 16, 'model.vocab_size': 64,
    'data.seq_len': 16, 'data.batch_size': 16,
    'train.steps': 20, 'train.warmup_steps': 2,
}


def tiny_config(**overrides) -> config_lib.Config:
  """gpt_small shrunk to test size; overrides as {'section.name': value}."""
  merged = dict(TINY)
  merged.update({k.replace('__', '.'): v for k, v in overrides.items()})
  return config_lib.from_configdict(load_configdict('experiments/gpt_small.py', merged))
