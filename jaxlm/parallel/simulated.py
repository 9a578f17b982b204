"""Simulated CPU devices for command-line tools (imports nothing from jax).

XLA fixes the device count when jax starts, so tools read their --devices=N
flag and call this before importing jax.
"""

import os


def use_simulated_devices(argv: list[str]) -> None:
  """Applies --devices=N from argv as N simulated host devices."""
  for arg in argv:
    if arg.startswith('--devices='):
      os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                                 f' --xla_force_host_platform_device_count={arg.split("=", 1)[1]}')
