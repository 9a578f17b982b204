"""Multi-host runs: `jax.distributed.initialize` from flags or the environment.

One process per host (per GPU node, per TPU VM worker). Each reads only its
rows of every batch (`data.train_batch`), process 0 alone prints and writes
metrics, and every process writes its shards of each checkpoint.

  --coordinator_address=HOST:PORT --num_processes=N --process_id=I  explicit
  JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID         the same, by env
  --distributed                       detect TPU pod slices, SLURM, Open MPI, k8s

On CPU the processes' collectives run over gloo (TCP), which is how the tests
run two processes on one machine.
"""

from __future__ import annotations

import os

import jax

from jaxlm.config import ConfigError


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, auto: bool = False) -> bool:
  """Joins the other processes if asked to; returns whether it did."""
  env = os.environ
  address = coordinator_address or env.get('JAX_COORDINATOR_ADDRESS')
  if num_processes is None and env.get('JAX_NUM_PROCESSES'):
    num_processes = int(env['JAX_NUM_PROCESSES'])
  if process_id is None and env.get('JAX_PROCESS_ID'):
    process_id = int(env['JAX_PROCESS_ID'])
  if not address and not auto:
    if num_processes not in (None, 1) or process_id not in (None, 0):
      raise ConfigError('--num_processes/--process_id need --coordinator_address=HOST:PORT'
                        ' (or JAX_COORDINATOR_ADDRESS), the address of process 0')
    return False
  if address and (num_processes is None or process_id is None):
    raise ConfigError(f'--coordinator_address={address} needs --num_processes and'
                      ' --process_id (or JAX_NUM_PROCESSES and JAX_PROCESS_ID)')
  if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
    raise ConfigError(f'--process_id={process_id} must be in [0, --num_processes={num_processes})')
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  try:
    jax.distributed.initialize(address, num_processes, process_id)
  except (RuntimeError, ValueError) as e:
    raise ConfigError(f'jax.distributed.initialize failed ({str(e).splitlines()[0]});'
                      ' check the coordinator address and that every process started') from None
  return True
