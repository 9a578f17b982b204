"""The public API at the package root, used as a user's script uses it: a fresh process that
only does `import jaxlm`.

docs/api.md's examples run first, as written, in a folder holding experiments/, a corpus
and a random small GPT-2 saved by transformers; they leave the trained and the imported
run folders that the other tests check against a direct model apply, the sample command
and transformers.
"""

import dataclasses
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch  # test-only dependency: the reference implementation
import transformers

import jaxlm
from jaxlm.config import ConfigError
from jaxlm.data import tokenizers
from jaxlm.inference import restore
from jaxlm.model.gpt import GPT
from tests import configs, testdata

# As tests/interop/hf_gpt2_test.py: sizes that differ, so a misread tensor cannot pass.
HF_CONFIG = dict(vocab_size=101, n_positions=32, n_embd=64, n_layer=2, n_head=4,
                 n_inner=80, bos_token_id=0, eos_token_id=0)
HF_TOKENS_BT = np.random.default_rng(0).integers(0, 101, (3, 32))


@dataclasses.dataclass(frozen=True)
class Workspace:
  root: str
  examples: subprocess.CompletedProcess  # docs/api.md's examples, run there
  hf: transformers.GPT2LMHeadModel  # what gpt2_hf/ holds

  def path(self, *names) -> str:
    return os.path.join(self.root, *names)


def doc_examples() -> str:
  """docs/api.md's python blocks, in order, as one script."""
  text = (testdata.REPO / 'docs' / 'api.md').read_text()
  return '\n'.join(re.findall(r'(?ms)^```python\n(.*?)^```', text))


def _python(args, cwd, timeout=600) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=str(testdata.REPO))
  return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                        text=True, check=False, timeout=timeout)


def _random_gpt2(path) -> transformers.GPT2LMHeadModel:
  torch.manual_seed(0)
  model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**HF_CONFIG)).eval()
  with torch.no_grad():  # GPT-2's init leaves biases 0 and norms 1: perturb them all
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  model.save_pretrained(path, safe_serialization=True)
  return model


def _torch_logits(model, tokens_BT) -> np.ndarray:
  with torch.no_grad():
    return model(torch.tensor(np.asarray(tokens_BT))).logits.numpy()


@pytest.fixture(scope='module')
def ws(tmp_path_factory) -> Workspace:
  root = tmp_path_factory.mktemp('api')
  configs.write_corpus(root / 'corpus.txt')
  os.symlink(testdata.REPO / 'experiments', root / 'experiments')
  hf = _random_gpt2(str(root / 'gpt2_hf'))
  return Workspace(str(root), _python(['-c', doc_examples()], root), hf)


def test_the_documented_examples_run(ws):
  assert ws.examples.returncode == 0, ws.examples.stderr[-3000:]
  assert 'Traceback' not in ws.examples.stderr
  out = ws.examples.stdout
  assert re.search(r'(?m)^20 \d\.\d+$', out), out[-2000:]  # metrics['step'], eval_loss
  assert re.search(r'(?m)^20 24 64$', out), out[-2000:]
  assert re.search(r'(?m)^None 101$', out) and '(1, 3, 101)' in out, out[-2000:]
  assert os.path.exists(ws.path('gpt2_out', 'model.safetensors'))


def test_import_jaxlm_imports_no_jax(tmp_path):
  script = ('import sys, jaxlm\n'
            "print(sorted(m for m in ('jax', 'numpy', 'orbax', 'flax') if m in sys.modules))")
  result = _python(['-c', script], tmp_path)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == '[]'


TRAINED = '''
import json, sys
import numpy as np
import jaxlm

workdir, tokens, out = sys.argv[1:]
model = jaxlm.load(workdir)
np.save(f'{out}.npy', model.logits(np.load(tokens)))
json.dump({
    'step': model.step, 'vocab_size': model.vocab_size,
    'greedy': model.generate(['goal match', 'vote'], 24),
    'again': model.generate(['vote', 'bank', 'goal match'], 24),
    'alone': model.generate(['vote'], 24),
    'ids': model.generate([model.tokenizer.encode('vote')], 24),
    'sampled': model.generate(['goal match'], 24, temperature=0.8, top_k=5, seed=3),
    'mesh': dict(model.mesh.shape), 'devices': len(model.mesh.devices.flat),
    'wte': [list(model.params['wte'].shape), str(model.params['wte'].dtype),
            len(model.params['wte'].sharding.device_set)],
}, open(f'{out}.json', 'w'))
'''


@pytest.fixture(scope='module')
def trained(ws, tmp_path_factory):
  """What the API gives on the documented run: (logits, the rest, the tokens sent)."""
  assert ws.examples.returncode == 0, ws.examples.stderr[-3000:]
  where = tmp_path_factory.mktemp('trained')
  tokens_BT = np.random.default_rng(1).integers(0, 24, (19, 11))  # two batches of 16, padded
  np.save(where / 'tokens.npy', tokens_BT)
  result = _python(['-c', TRAINED, ws.path('runs', 'small'), str(where / 'tokens.npy'),
                    str(where / 'out')], where)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stderr == '', result.stderr[-3000:]
  with open(where / 'out.json') as f:
    return np.load(where / 'out.npy'), json.load(f), tokens_BT


def test_params_and_mesh_are_the_restored_layout(trained):
  _, got, _ = trained
  assert list(got['mesh']) == ['data', 'model', 'pipeline']
  assert np.prod(list(got['mesh'].values())) == got['devices'] > 1
  # model.vocab_size 64 (24 characters, padded) x d_model 32, on every device of the mesh
  assert got['wte'] == [[64, 32], 'float32', got['devices']]


def test_logits_are_a_direct_apply_without_padded_columns(ws, trained):
  logits_BTV, got, tokens_BT = trained
  run = restore.load_run(ws.path('runs', 'small'))
  assert run.config.model.vocab_size == 64 and run.tokenizer.vocab_size == 24
  assert got['vocab_size'] == 24 and got['step'] == 20
  assert logits_BTV.shape == (19, 11, 24) and logits_BTV.dtype == np.float32
  params = jax.device_get(run.params)
  direct_BTV = np.asarray(GPT(run.config.model).apply({'params': params}, tokens_BT))
  np.testing.assert_allclose(logits_BTV, direct_BTV[..., :24], rtol=1e-5, atol=1e-5)


def test_greedy_generation_is_deterministic_in_any_batch(trained):
  _, got, _ = trained
  greedy, again = got['greedy'], got['again']
  assert [len(ids) for ids in greedy] == [24, 24]
  assert again[2] == greedy[0] and again[0] == greedy[1] == got['alone'][0] == got['ids'][0]
  assert got['sampled'][0] != greedy[0]  # temperature 0.8 draws


def _sample_command(workdir, cwd, *flags) -> list[str]:
  result = _python(['-m', 'jaxlm.sample', f'--workdir={workdir}', '--max_new_tokens=24',
                    *flags], cwd)
  assert result.returncode == 0, result.stderr[-3000:]
  parts = re.split(r'(?m)^--- prompt \d+, sample \d+ ---\n', result.stdout)
  texts = [p[:-1] for p in parts[1:]] if len(parts) > 1 else [result.stdout[:-1]]
  return texts


def test_generation_equals_the_sample_command(ws, trained, tmp_path):
  _, got, _ = trained
  workdir = ws.path('runs', 'small')
  decode = tokenizers.load_tokenizer(workdir).decode
  texts = _sample_command(workdir, tmp_path, '--prompt=goal match', '--prompt=vote',
                          '--temperature=0')
  assert texts == ['goal match' + decode(got['greedy'][0]), 'vote' + decode(got['greedy'][1])]
  texts = _sample_command(workdir, tmp_path, '--prompt=goal match', '--temperature=0.8',
                          '--top_k=5', '--seed=3')
  assert texts == ['goal match' + decode(got['sampled'][0])]


IMPORTED = '''
import json, sys
import numpy as np
import jaxlm

hf_dir, workdir, tokens, out = sys.argv[1:]
jaxlm.import_hf(hf_dir, workdir, dtype='float32')
model = jaxlm.load(workdir)
tokens_BT = np.load(tokens)
np.save(f'{out}.npy', model.logits(tokens_BT))
json.dump({'tokenizer': repr(model.tokenizer), 'vocab_size': model.vocab_size,
           'greedy': model.generate([tokens_BT[0, :5].tolist()], 6)}, open(f'{out}.json', 'w'))
'''


def test_imported_gpt2_logits_and_greedy_ids_match_transformers(ws, tmp_path):
  np.save(tmp_path / 'tokens.npy', HF_TOKENS_BT)
  result = _python(['-c', IMPORTED, ws.path('gpt2_hf'), str(tmp_path / 'run'),
                    str(tmp_path / 'tokens.npy'), str(tmp_path / 'out')], tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  logits_BTV = np.load(tmp_path / 'out.npy')
  with open(tmp_path / 'out.json') as f:
    got = json.load(f)
  assert got['tokenizer'] == 'None' and got['vocab_size'] == 101
  reference_BTV = _torch_logits(ws.hf, HF_TOKENS_BT)
  assert logits_BTV.shape == reference_BTV.shape == (3, 32, 101)
  assert np.abs(reference_BTV).max() > 0.5  # logits that can tell a wrong mapping apart
  assert np.abs(logits_BTV - reference_BTV).max() < 1e-4
  ids = HF_TOKENS_BT[0, :5].tolist()
  for _ in range(6):
    ids.append(int(_torch_logits(ws.hf, [ids])[0, -1].argmax()))
  assert got['greedy'] == [ids[5:]]


def test_the_documented_export_loads_in_transformers(ws):
  assert ws.examples.returncode == 0, ws.examples.stderr[-3000:]
  exported = transformers.GPT2LMHeadModel.from_pretrained(ws.path('gpt2_out')).eval()
  np.testing.assert_array_equal(_torch_logits(exported, HF_TOKENS_BT),
                                _torch_logits(ws.hf, HF_TOKENS_BT))


def test_bad_arguments_are_one_line_errors(ws, tmp_path):
  assert ws.examples.returncode == 0, ws.examples.stderr[-3000:]
  cases = [
      (lambda: jaxlm.load(str(tmp_path / 'nowhere')), r'does not exist'),
      (lambda: jaxlm.load(ws.path('runs', 'small'), dtype='int4'), r"dtype='int4' is not one"),
      (lambda: jaxlm.load(ws.path('runs', 'small'), step=7), r'has no checkpoint 7 \(saved:'),
      (lambda: jaxlm.train(str(tmp_path / 'none.py')), r'^config=\S+none\.py: no experiment'),
  ]
  model = jaxlm.load(ws.path('runs', 'small'))
  gpt2 = jaxlm.load(ws.path('runs', 'gpt2'))
  cases += [
      (lambda: model.logits([1, 2, 3]), r'tokens_BT has shape \(3,\).*\[batch, time\]'),
      (lambda: model.logits(np.zeros((1, 33), int)), r'more than the context of'
                                                      r' model\.max_len=32'),
      (lambda: model.logits([[0, 24]]), r'outside \[0, 24\)'),
      (lambda: model.generate('vote', 3), r"^prompts='vote' is one string; pass a list"),
      (lambda: model.generate(['vote'], 3, temperature=-1), r'^temperature=-1'),
      (lambda: model.generate([[]], 3), r'^prompt 0 is empty'),
      (lambda: gpt2.generate(['text'], 3), r'^prompt 0 is text but the run has no tokenizer'),
  ]
  for call, message in cases:
    with pytest.raises(ConfigError, match=message) as e:
      call()
    assert '\n' not in str(e.value), str(e.value)
