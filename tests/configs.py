"""Tiny configs for tests, derived from the real experiment files."""

from jaxlm import config as config_lib
from jaxlm.experiments import load_configdict
from tests import testdata

GPT_SMALL = testdata.REPO / 'experiments/gpt_small.py'

TINY = {
    'model.num_layers': 2, 'model.num_heads': 4, 'model.d_model': 32,
    'model.d_ff': 64, 'model.max_len': 16, 'model.vocab_size': 64,
    'data.seq_len': 16, 'data.batch_size': 16,
    'train.steps': 20, 'train.warmup_steps': 2,
}


# Llama's blocks in place of GPT-2's (tiny_config overrides); tests add kv heads etc.
LLAMA_BLOCKS = {'model__norm': 'rmsnorm', 'model__positions': 'rope', 'model__mlp': 'swiglu'}


def tiny_config(**overrides) -> config_lib.Config:
  """gpt_small shrunk to test size; overrides as {'section.name': value}."""
  merged = dict(TINY)
  merged.update({k.replace('__', '.'): v for k, v in overrides.items()})
  return config_lib.from_configdict(load_configdict(GPT_SMALL, merged))


WORDS = ('goal match team cup vote war treaty king bank stock trade price chip code robot'
         ' space').split()


def write_corpus(path) -> str:
  """400 lines of 12 random words (seeded): a small text file to train on offline."""
  import random
  rng = random.Random(0)
  text = '\n'.join(' '.join(rng.choice(WORDS) for _ in range(12)) for _ in range(400))
  with open(path, 'w') as f:
    f.write(text + '\n')
  return str(path)


def tiny_run_config(corpus: str, **overrides) -> config_lib.Config:
  """tiny_config on a local text file (char tokens): 8 steps, checkpoints 4 and 8, no sample.

  GPT-2's architecture (biases, tied embeddings), so that the run also exports.
  """
  settings = {'data.source': 'files', 'data.train_files': corpus, 'model.vocab_size': 0,
              'model.vocab_multiple': 8, 'model.use_bias': True, 'train.steps': 8,
              'train.log_every': 4, 'train.eval_every': 8, 'train.eval_steps': 1,
              'train.checkpoint_every': 4, 'train.keep_checkpoints': 3,
              'train.sample_tokens': 0}
  settings.update({k.replace('__', '.'): v for k, v in overrides.items()})
  return tiny_config(**settings)
