"""Samples text from a training run's latest checkpoint.

  python -m jaxlm.sample --workdir=runs/gpt_small --prompt="ROMEO:" \
      [--max_new_tokens=200 --temperature=0.8 --top_k=0 --top_p=1.0 --seed=0 \
       --num_samples=1 --quantize=none|int8]

--prompt may be given several times: the prompts run as one batch. The run
folder gives the config (config.json), the tokenizer and the parameters.
Past the context (model.max_len), each sample continues from its last
max_len // 2 tokens and a note says so (jaxlm/inference/generate.py). Text after a
tokenizer's end-of-document id is cut.

`load_run` (also used by jaxlm/evaluate.py) restores a run folder onto a mesh
of all local devices: the parameters in the training layout, tensor parallel
as the run was when the devices allow it, without pipeline stages or ZeRO.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402
from absl import flags  # noqa: E402

from jaxlm import cli  # noqa: E402

from jaxlm import config as config_lib  # noqa: E402
from jaxlm.inference import generate  # noqa: E402
from jaxlm.inference import quantize  # noqa: E402
from jaxlm.parallel import sharding  # noqa: E402
from jaxlm.training import steps  # noqa: E402
from jaxlm.data import tokenizers  # noqa: E402
from jaxlm.config import Config, ConfigError  # noqa: E402
from jaxlm.experiments import load_configdict  # noqa: E402
from jaxlm.model.gpt import GPT  # noqa: E402

QUANTIZE = ('none', 'int8')


@dataclasses.dataclass(frozen=True)
class Run:
  """A restored run folder."""
  config: Config
  model: GPT
  params: dict  # float32, or int8 QArrays with --quantize=int8
  tokenizer: tokenizers.Tokenizer
  step: int
  mesh: jax.sharding.Mesh


def read_config(workdir: str) -> Config:
  """The run folder's config.json as a checked Config.

  Settings that jaxlm gained after the run was made (outside `model`, so
  they do not shape the parameters) take experiments/gpt_small.py's values.
  """
  if not os.path.isdir(workdir):
    raise ConfigError(f'--workdir={workdir} does not exist; pass the folder of a training'
                      ' run (python -m jaxlm.main --workdir=...)')
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise ConfigError(f'--workdir={workdir} holds no config.json; pass the run folder of a'
                      ' jaxlm training run')
  with open(path) as f:
    raw = json.load(f)
  defaults = load_configdict('experiments/gpt_small.py').to_dict()
  for section in ('data', 'train', 'parallel'):
    for key, value in defaults[section].items():
      raw.get(section, {}).setdefault(key, value)
  return config_lib.from_configdict(raw)


def inference_mesh(c: Config) -> jax.sharding.Mesh:
  """All local devices: the run's model axis if it divides them, the rest on data."""
  model = c.parallel.model if c.parallel.model > 0 else 1
  if jax.device_count() % model:
    model = 1
  p = dataclasses.replace(c.parallel, data=-1, model=model, pipeline=1, zero_stage=0)
  return sharding.make_mesh(p)


def restore_params(directory: str, step: int, model: GPT, mesh, seq_len: int):
  """Only the parameters of a saved TrainState, placed in the training layout."""
  boxed = steps.abstract_params(model, seq_len)
  shardings = sharding.mesh_shardings(boxed, mesh)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          sharding.unbox_shapes(boxed), shardings)
  restore_args = jax.tree.map(lambda s: ocp.ArrayRestoreArgs(sharding=s), shardings)
  args = ocp.args.PyTreeRestore(item={'params': abstract}, restore_args={'params': restore_args},
                                partial_restore=True)
  with ocp.CheckpointManager(directory) as manager:
    return manager.restore(step, args=ocp.args.Composite(state=args))['state']['params']


def load_run(workdir: str, *, quantize_to: str = 'none') -> Run:
  """Config, tokenizer and the latest checkpoint's parameters; one-line ConfigErrors."""
  if quantize_to not in QUANTIZE:
    raise ConfigError(f'--quantize={quantize_to} is not one of: {", ".join(QUANTIZE)}')
  c = read_config(workdir)
  tokenizer = tokenizers.load_tokenizer(workdir)
  directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
  steps_saved = os.listdir(directory) if os.path.isdir(directory) else []
  if not any(name.isdigit() for name in steps_saved):
    raise ConfigError(f'--workdir={workdir} holds no checkpoint in checkpoints/; train it'
                      ' until it saves one (train.checkpoint_every) or pass another run folder')
  with ocp.CheckpointManager(directory) as manager:
    step = manager.latest_step()
  model = GPT(c.model)
  mesh = inference_mesh(c)
  with sharding.activate(mesh):
    params = restore_params(directory, step, model, mesh, c.data.seq_len)
    if quantize_to == 'int8':
      params = quantize.quantize(params)
  return Run(c, model, params, tokenizer, step, mesh)


def encode_prompts(run: Run, prompts: list[str]) -> list[list[int]]:
  """Token ids of each prompt; one-line errors for empty or too long ones."""
  out = []
  max_len = run.config.model.max_len
  for text in prompts:
    ids = [int(i) for i in run.tokenizer.encode(text)]
    if not ids:
      raise ConfigError(f'--prompt={text!r} is empty; give at least one character')
    if len(ids) > max_len:
      shown = repr(text) if len(text) <= 30 else repr(text[:30]) + '...'
      raise ConfigError(f'--prompt={shown} is {len(ids)} tokens, longer than the context'
                        f' of model.max_len={max_len}; shorten it')
    out.append(ids)
  return out


def _cut_at_eos(ids: list[int], eos: int | None) -> list[int]:
  return ids[:ids.index(eos)] if eos is not None and eos in ids else ids


def sample_texts(run: Run, prompts: list[str], max_new_tokens: int,
                 sampling: generate.Sampling, *, seed: int, num_samples: int
                 ) -> tuple[list[list[str]], bool]:
  """[prompt][sample] -> prompt + continuation, and whether the context shifted."""
  ids = encode_prompts(run, prompts)
  with sharding.activate(run.mesh):
    result = generate.generate(run.params, run.model, ids, max_new_tokens, sampling=sampling,
                               seed=seed, num_samples=num_samples)
  eos = run.tokenizer.eos_id
  texts = [[text + run.tokenizer.decode(_cut_at_eos(s, eos)) for s in samples]
           for text, samples in zip(prompts, result.tokens)]
  return texts, result.shifted


def sampling_from_flags(temperature: float, top_k: int, top_p: float) -> generate.Sampling:
  try:
    return generate.Sampling(temperature, top_k, top_p)
  except ValueError as e:  # its messages start with the field's name, the flag's name
    raise ConfigError(f'--{e}') from None


def _sample(_):
  f = flags.FLAGS
  if f.max_new_tokens < 1:
    raise ConfigError(f'--max_new_tokens={f.max_new_tokens} must be >= 1')
  if f.num_samples < 1:
    raise ConfigError(f'--num_samples={f.num_samples} must be >= 1')
  if not 0 <= f.seed < 2**32:
    raise ConfigError(f'--seed={f.seed} must be in [0, 2**32)')
  sampling = sampling_from_flags(f.temperature, f.top_k, f.top_p)
  run = load_run(f.workdir, quantize_to=f.quantize)
  prompts = f.prompt or [run.config.train.sample_prompt]
  texts, shifted = sample_texts(run, prompts, f.max_new_tokens, sampling,
                                seed=f.seed, num_samples=f.num_samples)
  print(f'step {run.step} of {f.workdir}, {f.quantize} weights'
        f' ({quantize.nbytes(run.params) / 2**20:.2f} MiB)', file=sys.stderr, flush=True)
  many = len(texts) * len(texts[0]) > 1
  for i, samples in enumerate(texts):
    for j, text in enumerate(samples):
      if many:
        print(f'--- prompt {i + 1}, sample {j + 1} ---')
      print(text)
  if shifted:
    W = run.config.model.max_len
    print(f'note: the text outgrew the context of model.max_len={W} tokens; past it, each'
          f' sample continued from its last {W // 2} tokens', file=sys.stderr)


def define_flags() -> None:
  """The command line's flags: defined only when run (jaxlm.evaluate imports this module)."""
  flags.DEFINE_string('workdir', None, 'Run folder of a training run.', required=True)
  flags.DEFINE_multi_string('prompt', None, 'Prompt text; repeat for a batch.'
                            " Default: the run's train.sample_prompt.")
  flags.DEFINE_integer('max_new_tokens', 200, 'Tokens to generate per sample.')
  flags.DEFINE_float('temperature', 0.8, '0: greedy.')
  flags.DEFINE_integer('top_k', 0, 'Keep the k most likely tokens; 0: all.')
  flags.DEFINE_float('top_p', 1.0, 'Keep the fewest tokens reaching this mass; 1: all.')
  flags.DEFINE_integer('seed', 0, 'Random seed.')
  flags.DEFINE_integer('num_samples', 1, 'Samples per prompt.')
  flags.DEFINE_string('quantize', 'none', 'none or int8 (weight-only).')


def main():
  define_flags()
  cli.run_command(_sample)


if __name__ == '__main__':
  main()
