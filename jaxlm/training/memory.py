"""Per-device bytes of a train state from its shardings, and the start-of-run memory line."""

from __future__ import annotations

import jax
import numpy as np

from jaxlm.config import Config
from jaxlm.training import steps as steps_lib
from jaxlm.training.metrics import format_bytes


def shard_bytes(abstract, shardings) -> int:
  """Bytes one device holds of the arrays `abstract` laid out as `shardings`."""
  total = 0
  for a, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings)):
    total += int(np.prod(s.shard_shape(a.shape))) * a.dtype.itemsize
  return total


def memory_summary(c: Config, s: steps_lib.Steps, compiled) -> str:
  """One line for a run's start: the layout and its per-device memory."""
  sh, abstract = s.state_shardings, s.abstract_state
  p = c.parallel
  temp = compiled.memory_analysis().temp_size_in_bytes
  return (f'layout (data, model, pipeline)={tuple(s.mesh.shape.values())},'
          f' zero_stage={p.zero_stage}, remat={p.remat.value}; per device: params'
          f' {format_bytes(shard_bytes(abstract.params, sh.params))}, optimizer state'
          f' {format_bytes(shard_bytes(abstract.opt_state, sh.opt_state))},'
          f' temporaries {format_bytes(temp)}')
