"""Samples text from a training run's newest readable checkpoint.

  python -m jaxlm.sample --workdir=runs/gpt_small --prompt="ROMEO:" \
      [--max_new_tokens=200 --temperature=0.8 --top_k=0 --top_p=1.0 --seed=0 \
       --num_samples=1 --quantize=none|int8]

--prompt may be given several times: the prompts run as one batch. The run
folder gives the config (config.json), the tokenizer and the parameters.
--tokens=5,7,11 (also repeatable) gives a prompt as token ids instead: a run
without a tokenizer (a Hugging Face import) then prints ids, one sample a line.
Past the context (model.max_len), each sample continues from its last
max_len // 2 tokens and a note says so (jaxlm/inference/generate.py). Text after a
tokenizer's end-of-document id is cut.

The run folder is restored by jaxlm/inference/restore.py (`load_run`, also
behind jaxlm/evaluate.py and `jaxlm.load`): an unreadable newest checkpoint
is passed over for the one before it, with one line on stderr.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import flags  # noqa: E402

from jaxlm import cli  # noqa: E402
from jaxlm.config import ConfigError  # noqa: E402
from jaxlm.data import tokenizers  # noqa: E402
from jaxlm.inference import generate  # noqa: E402
from jaxlm.inference import quantize  # noqa: E402
# The restore lived here before jaxlm/inference/restore.py: these names stay importable.
from jaxlm.inference.restore import (QUANTIZE, Run, inference_mesh, load_run,  # noqa: E402,F401
                                     read_config, restore_params)
from jaxlm.parallel import sharding  # noqa: E402


def encode_prompts(run: Run, prompts: list[str]) -> list[list[int]]:
  """Token ids of each prompt; one-line errors for empty or too long ones."""
  out, warnings = [], []
  max_len = run.config.model.max_len
  for text in prompts:
    ids = [int(i) for i in run.tokenizer.encode(text)]
    if not ids:
      raise ConfigError(f'--prompt={text!r} is empty; give at least one character')
    unk = getattr(run.tokenizer, 'unk_id', None)
    unknown = sorted({ch for ch, i in zip(text, ids) if i == unk}) if unk is not None else []
    if unknown:  # a char tokenizer: one id per character, so the pairs line up
      warnings.append(f'warning: --prompt has {sum(i == unk for i in ids)} character(s) the'
                      f' tokenizer never saw in training ({"".join(unknown[:10])!r}); each'
                      ' became the unknown id')
    if len(ids) > max_len:
      shown = repr(text) if len(text) <= 30 else repr(text[:30]) + '...'
      raise ConfigError(f'--prompt={shown} is {len(ids)} tokens, longer than the context'
                        f' of model.max_len={max_len}; shorten it')
    out.append(ids)
  for line in warnings:  # once every prompt is known to be usable
    print(line, file=sys.stderr, flush=True)
  return out


def parse_tokens(values: list[str]) -> list[list[int]]:
  """--tokens=5,7,11 values as id lists (before the run is loaded)."""
  out = []
  for value in values:
    try:
      ids = [int(t) for t in value.replace(' ', '').split(',') if t]
    except ValueError:
      raise ConfigError(f'--tokens={value!r} is not comma-separated integers, e.g.'
                        ' --tokens=5,7,11') from None
    if not ids:
      raise ConfigError(f'--tokens={value!r} is empty; give at least one id')
    out.append(ids)
  return out


def check_tokens(prompts: list[list[int]], run: Run) -> list[list[int]]:
  """Id prompts checked against the run's vocabulary and context."""
  V, max_len = run.config.model.real_vocab, run.config.model.max_len
  for ids in prompts:
    bad = [i for i in ids if not 0 <= i < V]
    if bad:
      raise ConfigError(f'--tokens has id {bad[0]}, outside the vocabulary [0, {V}); give ids'
                        ' the run\'s model knows')
    if len(ids) > max_len:
      raise ConfigError(f'--tokens has {len(ids)} ids, more than the context of'
                        f' model.max_len={max_len}; shorten it')
  return prompts


def sample_ids(run: Run, ids: list[list[int]], max_new_tokens: int,
               sampling: generate.Sampling, *, seed: int, num_samples: int
               ) -> tuple[list[list[str]], bool]:
  """[prompt][sample] -> the new ids (space-separated), or text with a tokenizer."""
  with sharding.activate(run.mesh):
    result = generate.generate(run.params, run.model, ids, max_new_tokens, sampling=sampling,
                               seed=seed, num_samples=num_samples)
  if run.tokenizer is None:
    return [[' '.join(map(str, s)) for s in samples] for samples in result.tokens], \
        result.shifted
  eos = run.tokenizer.eos_id
  return [[run.tokenizer.decode(list(prompt) + _cut_at_eos(s, eos)) for s in samples]
          for prompt, samples in zip(ids, result.tokens)], result.shifted


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
  texts = [[tokenizers.continue_text(run.tokenizer, text, prompt_ids, _cut_at_eos(s, eos))
            for s in samples]
           for text, prompt_ids, samples in zip(prompts, ids, result.tokens)]
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
  if f.tokens and f.prompt:
    raise ConfigError('give --prompt (text) or --tokens (ids), not both')
  id_prompts = parse_tokens(f.tokens or [])
  run = load_run(f.workdir, quantize_to=f.quantize, tokenizer_required=not f.tokens)
  if f.tokens:
    texts, shifted = sample_ids(run, check_tokens(id_prompts, run), f.max_new_tokens,
                                sampling, seed=f.seed, num_samples=f.num_samples)
  else:
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


def _define_flags() -> None:
  """The command line's flags: defined only when run (jaxlm.evaluate imports this module)."""
  flags.DEFINE_string('workdir', None, 'Run folder of a training run.', required=True)
  flags.DEFINE_multi_string('prompt', None, 'Prompt text; repeat for a batch.'
                            " Default: the run's train.sample_prompt.")
  flags.DEFINE_multi_string('tokens', None, 'A prompt as comma-separated token ids, e.g.'
                            ' 5,7,11; repeat for a batch. Runs without a tokenizer print ids.')
  flags.DEFINE_integer('max_new_tokens', 200, 'Tokens to generate per sample.')
  flags.DEFINE_float('temperature', 0.8, '0: greedy.')
  flags.DEFINE_integer('top_k', 0, 'Keep the k most likely tokens; 0: all.')
  flags.DEFINE_float('top_p', 1.0, 'Keep the fewest tokens reaching this mass; 1: all.')
  flags.DEFINE_integer('seed', 0, 'Random seed.')
  flags.DEFINE_integer('num_samples', 1, 'Samples per prompt.')
  flags.DEFINE_string('quantize', 'none', 'none or int8 (weight-only).')


def main():
  _define_flags()
  cli.run_command(_sample)


if __name__ == '__main__':
  main()
