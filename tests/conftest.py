"""Test setup: 8 simulated CPU devices, set before anything imports jax."""

import os
import shutil
import tempfile

# 8 simulated devices. Backend optimisation level 0 skips LLVM's optimisation
# of the generated CPU code: compiles get about 3x faster, which is most of
# the suite's time. HLO passes and SPMD partitioning are unchanged, so what
# the tests prove about layouts still holds for the optimised build. XLA:CPU's older
# elemental emitters instead of its fusion emitters generate code from the same fused
# HLO at about half the compile time (measured: a ZeRO-3 train step 0.8 s vs 1.8 s;
# tests/parallel 4m19s vs 6m27s from a cold cache).
os.environ['XLA_FLAGS'] = (
    os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
    ' --xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# One persistent compilation cache for the session's processes, the ones tests start
# included (jaxlm's --compilation_cache_dir defaults to JAX_COMPILATION_CACHE_DIR): a
# program that one test compiled, another loads. Every compile is kept (they are small).
# The key covers the program, XLA_FLAGS and the jax version, so a hit is the same binary.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.join(
    tempfile.gettempdir(), f'jaxlm-tests-xla-cache-{os.getuid()}'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
# Prepared datasets (jaxlm/data/prepare.py's cache by fingerprint) go to a folder of this
# test process and the commands it starts, never the user's ~/.cache; removed at the end.
_DATASET_CACHE = tempfile.mkdtemp(prefix='jaxlm-tests-datasets-')
os.environ['JAXLM_DATASET_CACHE'] = _DATASET_CACHE

import jax  # noqa: E402  (after XLA_FLAGS on purpose)

jax.config.update('jax_numpy_rank_promotion', 'raise')


import pytest  # noqa: E402


@pytest.fixture(scope='session')
def shakespeare_dir() -> str:
  """The package's tiny_shakespeare folder: TFDS's manual_dir for tiny_shakespeare."""
  from tests import testdata
  return testdata.shakespeare_dir()


@pytest.fixture(scope='session')
def tfds_dir() -> str:
  """One TFDS data_dir for the session, so tiny_shakespeare is prepared once."""
  from tests import testdata
  return testdata.tfds_data_dir()


def pytest_collection_modifyitems(items):
  """The slow tests first (stable otherwise): with several workers, a long test that
  starts last leaves the others idle at the end. The order changes no result."""
  items.sort(key=lambda item: item.get_closest_marker('slow') is None)


def pytest_unconfigure(config):
  shutil.rmtree(_DATASET_CACHE, ignore_errors=True)
