"""What each task supplies to the one loop: its data, batches, loss and metrics.

`lm` is causal-LM pretraining, `classify` classification fine-tuning; the
config's sections say which (`Config.task`).
"""

from __future__ import annotations

from jaxlm.config import Config
from jaxlm.tasks.base import Task
from jaxlm.training.steps import Objective


def for_config(c: Config) -> Task:
  """The task object of a config."""
  from jaxlm.tasks import classify, lm
  return classify.Classification(c) if c.task == 'classify' else lm.LanguageModelling(c)


def objective(c: Config, stack=None) -> Objective:
  """The config's objective without reading data (its vocabulary must be resolved)."""
  from jaxlm.tasks import classify, lm
  return classify.classifier_objective(c) if c.task == 'classify' else lm.lm_objective(c, stack)
