"""Test setup: 8 simulated CPU devices, set before anything imports jax."""

import os

os.environ['XLA_FLAGS'] = (
    os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # noqa: E402  (after XLA_FLAGS on purpose)

jax.config.update('jax_numpy_rank_promotion', 'raise')
