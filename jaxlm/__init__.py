"""jaxlm: decoder LMs (GPT-2, the Llama family) in JAX/Flax. The Python API (docs/api.md):

  import jaxlm
  result = jaxlm.train('experiments/gpt_small.py', 'runs/small')  # python -m jaxlm.main
  model = jaxlm.load('runs/small')                                 # a Model (inference/model.py)
  model.logits([[1, 2, 3]]); model.generate(['ROMEO:'], 50)
  jaxlm.import_hf('hf_dir', 'runs/imported')                       # python -m jaxlm.hf import
  jaxlm.export_hf('runs/imported', 'hf_out')                       # python -m jaxlm.hf export

`import jaxlm` imports no jax: each function imports what it needs when
called, so a script (or `python -m jaxlm.plan --devices=N`) can still set
XLA_FLAGS first. Bad arguments raise jaxlm.config.ConfigError, one line
naming the argument and the fix.

With EleutherAI's lm-eval harness installed, `import jaxlm` also tells it
the model type `jaxlm` (jaxlm/inference/lm_eval.py; docs/evaluation.md).
"""

from __future__ import annotations

import os
import typing

if typing.TYPE_CHECKING:  # for readers and type checkers only: no import at run time
  import ml_collections

  from jaxlm.config import Config
  from jaxlm.inference.model import Model

__all__ = ['export_hf', 'import_hf', 'load', 'train']


def load(workdir: str, *, step: int | None = None, dtype: str | None = None) -> Model:
  """A trained or imported run restored onto the local devices, as a Model.

  step: a checkpoint step (default: the newest readable one; an unreadable
  newest one is passed over with one line on stderr). dtype: the compute
  dtype, e.g. 'float32' (default: the run's model.dtype).
  """
  from jaxlm.inference import model
  return model.load_model(workdir, step=step, dtype=dtype)


def import_hf(hf_dir: str, workdir: str, *, dtype: str | None = None,
              experiment: str | None = None, vocab_multiple: int | None = None) -> Config:
  """Writes a new run folder from a Hugging Face directory (safetensors); its Config.

  GPT-2, Llama, Mistral and Qwen2 causal LMs (docs/interop.md).
  dtype: the run's compute dtype (default: float32, logits as transformers').
  experiment: a file of the other run settings (default: GPT-2 124M's).
  vocab_multiple: the vocabulary is padded to a multiple of it (default: the settings',
  128), its padding masked; every model axis size that will split it must divide it.
  """
  from jaxlm.interop import hf as hf_interop
  return hf_interop.import_run(hf_dir, workdir, experiment, dtype=dtype,
                              vocab_multiple=vocab_multiple)


def export_hf(workdir: str, out_dir: str, *, step: int | None = None) -> Config:
  """Writes a run's checkpoint (default: the newest readable) as a new HF directory."""
  from jaxlm.interop import hf as hf_interop
  return hf_interop.export_run(workdir, out_dir, step)


def train(config: Config | ml_collections.ConfigDict | str, workdir: str | None = None
          ) -> dict:
  """What `python -m jaxlm.main` does: trains (or resumes) a run; its final metrics.

  config: a Config, an experiment's ConfigDict, or an experiment file path
  ('experiments/gpt_small.py', or 'FILE.py:VARIANT'). workdir: the run folder
  (default: a new one under runs/); an existing one resumes.
  """
  from jaxlm import config as config_lib
  from jaxlm.experiments import load_configdict
  from jaxlm.training import loop
  if isinstance(config, (str, os.PathLike)):
    try:
      config = load_configdict(config)
    except FileNotFoundError as e:
      raise config_lib.ConfigError(f'config={config}: {e}; pass an experiment file such as'
                                   ' experiments/gpt_small.py, a ConfigDict or a Config'
                                   ) from None
  if not isinstance(config, config_lib.Config):
    config = config_lib.from_configdict(config)
  import jax
  if jax.process_count() > 1 and not workdir:
    raise config_lib.ConfigError('a multi-host run needs workdir=DIR on a filesystem'
                                 ' every process sees (the same path on each)')
  return loop.run(config, workdir)


def _register_with_lm_eval() -> None:
  """model='jaxlm' for an installed lm-eval harness: a lazy 'module:Class' entry in its
  model registry (0.4.13 has no plugin entry points), so nothing heavy (no jax) loads now."""
  import importlib.util
  if importlib.util.find_spec('lm_eval') is None:
    return
  try:
    # The harness's own models first: its get_model() adds them only to an empty registry.
    import lm_eval.models  # noqa: F401
    from lm_eval.api.registry import model_registry
  except ImportError:  # a harness without the lazy registry: importing the adapter registers it
    return
  if 'jaxlm' not in model_registry:
    model_registry.register('jaxlm', target='jaxlm.inference.lm_eval:JaxLM')


_register_with_lm_eval()
