"""The sample and evaluate command lines, and the evaluation's definition."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm import config as config_lib, evaluate, sample
from jaxlm.inference import generate
from jaxlm.parallel import sharding
from jaxlm.training import steps as steps_lib
from jaxlm.training.checkpoint import Checkpointer
from jaxlm.config import ConfigError
from jaxlm.data.tokenizers import CharTokenizer
from tests import forked, testdata
from tests.configs import tiny_config

REPO = str(testdata.REPO)
TEXT = 'First Citizen:\nBefore we proceed any further, hear me speak.\n'


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  """A run folder as jaxlm.main leaves it, written directly (no training, no TFDS)."""
  workdir = str(tmp_path_factory.mktemp('run'))
  tokenizer = CharTokenizer.train([TEXT])
  tokenizer.save(workdir)
  # The eval split: 70 characters, 5 windows of 16, the last one short.
  eval_file = os.path.join(workdir, 'eval.txt')
  with open(eval_file, 'w') as f:
    f.write((TEXT * 2)[:70])
  c = config_lib.resolve_vocab(
      tiny_config(model__vocab_size=0, model__vocab_multiple=4, data__source='files',
                  data__train_files=eval_file, data__eval_files=eval_file),
      tokenizer.vocab_size)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump(config_lib.to_dict(c), f)
  mesh = sharding.make_mesh(c.parallel)
  with sharding.activate(mesh):
    state = steps_lib.build(c, mesh).init()
    ckpt = Checkpointer(workdir, keep=1, every=1)
    ckpt.save(3, state, config_lib.to_dict(c), force=True)
    ckpt.wait()
    ckpt.close()
  return workdir


def _cli(module, *args):
  out = forked.run_module([module, *args], REPO)  # `python -m`, its imports warm
  return out.returncode, out.stdout, out.stderr


def test_evaluate_equals_a_hand_computed_mean_over_every_window(run_dir):
  run = sample.load_run(run_dir)
  tokens = run.tokenizer.encode((TEXT * 2)[:70]).astype(np.int32)
  L = run.config.data.seq_len
  # By hand: window w holds tokens wL .. wL+L; each predicts the next, the
  # last window fewer. Every one of t_1..t_n once.
  logprobs = []
  for start in range(0, len(tokens) - 1, L):
    window = tokens[start:start + L + 1]
    logits = run.model.apply({'params': run.params}, jnp.asarray(window[None, :-1]))[0]
    logp = np.asarray(jax.nn.log_softmax(logits.astype(jnp.float32)), np.float64)
    logprobs += [logp[i, window[i + 1]] for i in range(len(window) - 1)]
  assert len(logprobs) == len(tokens) - 1 == 69
  loss = -np.mean(logprobs)

  m = evaluate.evaluate_run(run_dir, batch_size=3)  # 5 windows: a padded last batch
  assert m['tokens'] == 69 and m['split'] == 'validation' and m['step'] == 3
  np.testing.assert_allclose(m['loss'], loss, rtol=1e-6)
  np.testing.assert_allclose(m['perplexity'], math.exp(loss), rtol=1e-6)
  np.testing.assert_allclose(m['bits_per_character'], loss / math.log(2), rtol=1e-6)

  code, out, err = _cli('jaxlm.evaluate', f'--workdir={run_dir}', '--quantize=int8')
  assert code == 0, err
  assert 'split validation: 69 predicted tokens' in out
  int8_loss = float(out.split('loss ')[1].split()[0])
  assert abs(int8_loss - loss) < 0.01


def test_sample_prints_what_generate_gives(run_dir):
  code, out, err = _cli('jaxlm.sample', f'--workdir={run_dir}', '--prompt=First',
                        '--prompt=hear me', '--max_new_tokens=20', '--temperature=0')
  assert code == 0, err
  run = sample.load_run(run_dir)
  ids = sample.encode_prompts(run, ['First', 'hear me'])
  result = generate.generate(run.params, run.model, ids, 20)
  expected = ['First' + run.tokenizer.decode(result.tokens[0][0]),
              'hear me' + run.tokenizer.decode(result.tokens[1][0])]
  assert out == (f'--- prompt 1, sample 1 ---\n{expected[0]}\n'
                 f'--- prompt 2, sample 1 ---\n{expected[1]}\n')
  assert 'note: the text outgrew' in err  # 7 + 20 tokens > max_len 16


@pytest.mark.parametrize('module, args, message', [
    ('jaxlm.sample', ['--workdir=/no/such/run'],
     'error: --workdir=/no/such/run does not exist; pass the folder of a training run'
     ' (python -m jaxlm.main --workdir=...)'),
    ('jaxlm.sample', ['--prompt=' + 'x' * 17],
     "error: --prompt='xxxxxxxxxxxxxxxxx' is 17 tokens, longer than the"
     ' context of model.max_len=16; shorten it'),
    ('jaxlm.sample', ['--top_p=2'], 'error: --top_p=2.0 must be in (0, 1] (1 keeps every token)'),
    ('jaxlm.sample', ['--max_new_tokens=abc'],
     "error: flag --max_new_tokens=abc: invalid literal for int() with base 10: 'abc'"),
    ('jaxlm.evaluate', ['--quantize=int4'], 'error: --quantize=int4 is not one of: none, int8'),
])
def test_bad_input_is_one_line_error(run_dir, module, args, message):
  if not any(a.startswith('--workdir') for a in args):
    args = [f'--workdir={run_dir}'] + args
  code, out, err = _cli(module, *args)
  assert code == 1
  assert err.strip() == message
  assert out == ''


def test_run_folder_errors(run_dir, tmp_path):
  with pytest.raises(ConfigError, match=r'holds no config\.json'):
    sample.load_run(str(tmp_path))
  (tmp_path / 'config.json').write_text(open(os.path.join(run_dir, 'config.json')).read())
  (tmp_path / 'tokenizer.json').write_text(open(os.path.join(run_dir, 'tokenizer.json')).read())
  with pytest.raises(ConfigError, match=r'holds no checkpoint in checkpoints/; train it'):
    sample.load_run(str(tmp_path))
  with pytest.raises(ConfigError, match=r"--prompt='' is empty"):
    sample.encode_prompts(sample.load_run(run_dir), [''])
