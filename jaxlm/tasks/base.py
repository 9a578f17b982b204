"""What a task gives the one training loop (jaxlm/training/loop.py).

A task reads its data, builds or loads its tokenizer, and supplies the
`Objective` (model, loss, eval outputs) that jaxlm/training/steps.py jits.
Everything else — mesh and shardings, accumulation, the NaN/Inf guard, stop
signals, checkpoints and their fall-back, prefetch, profiling, metrics and
the progress line — is the loop's, the same for every task.
"""

from __future__ import annotations

from typing import Any


from jaxlm.config import Config
from jaxlm.training.steps import Objective


class Task:
  """The task interface; pretraining (lm.py) and classification (classify.py) implement it."""
  config: Config  # resolved by prepare (vocabulary size, a pretrained architecture)
  tokenizer: Any = None

  def prepare(self, workdir: str, resuming: bool) -> Config:
    """Reads the data and builds the tokenizer, writing nothing; the resolved config.

    Resuming, the tokenizer is the run folder's (the checkpoint's vocabulary);
    otherwise it is built from the current data, never taken from an earlier run.
    """
    raise NotImplementedError

  def save(self, workdir: str) -> None:
    """Writes what the run folder keeps of the task (its tokenizer); process 0 only."""
    if self.tokenizer is not None:
      self.tokenizer.save(workdir)

  def objective(self, stack=None) -> Objective:
    """The model (its layer stack injected for pipelines), loss and eval outputs."""
    raise NotImplementedError

  def check_resumable(self, saved: dict, step: int, where: str) -> None:
    """Refuses to resume a checkpoint whose task settings differ (ConfigError)."""

  def start_params(self, abstract_params) -> dict | None:
    """Parameters to start from instead of random ones (a pretrained body), or None."""
    return None

  def describe(self, n_params: int) -> str:
    """The model line printed at start."""
    raise NotImplementedError

  def train_batch(self, step: int, process_index: int, process_count: int) -> dict:
    """This process's rows of global batch `step`, a pure function of (seed, step)."""
    raise NotImplementedError

  def eval_batches(self, process_index: int, process_count: int) -> list[dict]:
    """The eval split's batches (this process's rows)."""
    raise NotImplementedError

  def eval_metrics(self, outputs: list) -> dict:
    """Host-side summary of the eval step's outputs, one entry per batch."""
    raise NotImplementedError

  def eval_line(self, metrics: dict) -> str:
    """The eval part of the console line."""
    raise NotImplementedError

  # Throughput: the loop reports tokens/s and MFU from these.
  tokens_per_step: int = 0
  examples_per_step: int = 0
  flops_per_token: float = 0.0
  examples_per_line = False  # the progress line shows examples/s instead of tokens/s

  def train_line(self, values: dict) -> str:
    """Task metrics for the train console line, e.g. ' | accuracy 0.812'."""
    return ''

  def finish(self, params, workdir: str, result: dict) -> None:
    """After the last step (process 0 writes files): a sample, a report."""

