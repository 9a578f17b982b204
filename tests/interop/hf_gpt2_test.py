"""GPT-2 Hugging Face interop: logit parity with transformers, round trips, errors.

(The Llama family: tests/interop/hf_llama_test.py.)
"""

import dataclasses
import json
import os
import shutil

import jax
import numpy as np
import pytest
import torch  # test-only dependency (requirements.txt): the reference implementation
import transformers
from safetensors.numpy import load_file

from jaxlm import config as config_lib
from jaxlm.inference import generate
from jaxlm.interop import hf as hf_interop
from jaxlm.parallel import sharding
from jaxlm.training import steps as steps_lib
from jaxlm.training.checkpoint import Checkpointer
from jaxlm.config import ConfigError
from jaxlm.experiments import load_configdict
from jaxlm.model.gpt import GPT
from tests import forked, testdata

# Sizes that differ from each other, so a transposed or misread tensor cannot
# pass: V 101 (odd, unpadded), T 32, D 64, F 80, H 4, K 16.
HF_CONFIG = dict(vocab_size=101, n_positions=32, n_embd=64, n_layer=2, n_head=4,
                 n_inner=80, bos_token_id=0, eos_token_id=0)
TOKENS_BL = np.random.default_rng(0).integers(0, 101, (2, 32))


@dataclasses.dataclass(frozen=True)
class Reference:
  path: str  # what save_pretrained wrote
  logits_BLV: np.ndarray  # transformers' logits for TOKENS_BL, eval mode


def _torch_logits(model, tokens_BL) -> np.ndarray:
  with torch.no_grad():
    return model(torch.tensor(tokens_BL)).logits.numpy()


@pytest.fixture(scope='module')
def hf(tmp_path_factory) -> Reference:
  """A random GPT-2 saved as safetensors, and its logits in eval mode."""
  torch.manual_seed(0)
  model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**HF_CONFIG)).eval()
  with torch.no_grad():  # GPT-2's init leaves biases 0 and norms 1: perturb them all
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  path = str(tmp_path_factory.mktemp('hf') / 'gpt2')
  model.save_pretrained(path, safe_serialization=True)
  return Reference(path, _torch_logits(model, TOKENS_BL))


@pytest.fixture(scope='module')
def run(hf, tmp_path_factory):
  """The HF model imported into a jaxlm run folder."""
  workdir = str(tmp_path_factory.mktemp('runs') / 'imported')
  hf_interop.import_run(hf.path, workdir)
  return workdir


def _float32(c):
  return GPT(dataclasses.replace(c.model, dtype='float32'))


def test_imported_logits_match_transformers(hf, run):
  c, params = hf_interop.read_run_params(run)
  # 101 padded to gpt2_settings()'s multiple of 128, the padding masked.
  m = c.model
  assert (m.vocab_size, m.real_vocab_size, m.max_len, m.d_ff) == (128, 101, 32, 80)
  assert not params['wte'][101:].any()
  ours_BLV = np.asarray(_float32(c).apply({'params': params}, TOKENS_BL))
  assert (ours_BLV[..., 101:] == np.finfo(np.float32).min).all()
  ours_BLV = ours_BLV[..., :101]
  diff = np.abs(ours_BLV - hf.logits_BLV).max()
  print(f'max |logit diff| jaxlm vs transformers: {diff:.3g}')
  assert np.abs(hf.logits_BLV).max() > 0.5  # logits that can tell a wrong mapping apart
  assert diff < 1e-4


def test_greedy_sample_matches_transformers(hf, run):
  c, params = hf_interop.read_run_params(run)
  prompt = TOKENS_BL[0, :5].tolist()
  ours = generate.sample(params, _float32(c), prompt, 6, temperature=0.0)
  model = transformers.GPT2LMHeadModel.from_pretrained(hf.path).eval()
  ids = list(prompt)
  for _ in range(6):
    ids.append(int(_torch_logits(model, np.array([ids]))[0, -1].argmax()))
  assert ours == ids[len(prompt):]


def test_jaxlm_main_can_resume_the_import(run):
  # What `python -m jaxlm.main --config=experiments/gpt2_124m.py --workdir=RUN
  # --config.model.num_layers=2 ...` does before its first step, on all 8 devices.
  overrides = {'model.num_layers': 2, 'model.num_heads': 4, 'model.d_model': 64,
               'model.d_ff': 80, 'model.max_len': 32, 'model.vocab_size': 128,
               'model.real_vocab_size': 101,
               'data.seq_len': 32}
  c = config_lib.from_configdict(load_configdict(testdata.REPO / hf_interop.EXPERIMENT, overrides))
  ckpt = Checkpointer(run, keep=c.train.keep_checkpoints, every=c.train.checkpoint_every)
  ckpt.check_compatible(config_lib.to_dict(c))
  assert ckpt.latest_step() == 0
  mesh = sharding.make_mesh(c.parallel)
  assert mesh.size == 8
  with sharding.activate(mesh):
    s = steps_lib.build(c, mesh)
    state = ckpt.restore(0, s.abstract_state)
    fresh = s.init()
  _, params = hf_interop.read_run_params(run)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(params),
               jax.device_get(state.params))
  # A fresh optimizer state and the RNG init_state would have made.
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(fresh.opt_state),
               jax.device_get(state.opt_state))
  np.testing.assert_array_equal(jax.device_get(fresh.rng), jax.device_get(state.rng))
  assert int(state.step) == 0
  with open(os.path.join(run, 'config.json')) as f:
    imported = json.load(f)['model']
  assert imported.pop('dtype') == 'float32'  # an import computes in float32 by default
  assert imported == {k: v for k, v in config_lib.to_dict(c)['model'].items() if k != 'dtype'}


def test_import_settings_are_the_gpt2_124m_experiment():
  # Built in, so that an installed jaxlm imports without a checkout's experiments/.
  assert (hf_interop.gpt2_settings().to_dict()
          == load_configdict(testdata.REPO / hf_interop.EXPERIMENT).to_dict())


def test_export_round_trips_exactly(hf, run, tmp_path):
  out = str(tmp_path / 'exported')
  result = forked.run_module(['jaxlm.hf', 'export', f'--workdir={run}', f'--out_dir={out}'],
                              os.getcwd())
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith('exported ')
  assert sorted(os.listdir(out)) == ['config.json', 'generation_config.json',
                                     'model.safetensors']
  # The same tensors, bit for bit, under the same names as save_pretrained's.
  original = load_file(f'{hf.path}/model.safetensors')
  exported = load_file(f'{out}/model.safetensors')
  assert sorted(exported) == sorted(original)
  for name, x in original.items():
    np.testing.assert_array_equal(exported[name], x, err_msg=name)
  # transformers loads it and computes the same logits.
  model = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
  np.testing.assert_array_equal(_torch_logits(model, TOKENS_BL), hf.logits_BLV)
  # Importing the export gives back the same params.
  again = str(tmp_path / 'reimported')
  hf_interop.import_run(out, again)
  jax.tree.map(np.testing.assert_array_equal, hf_interop.read_run_params(run)[1],
               hf_interop.read_run_params(again)[1])


def _hf_copy(hf_dir, dest, *, config_edit=None, weights=True):
  os.makedirs(dest)
  with open(f'{hf_dir}/config.json') as f:
    hf_config = json.load(f)
  hf_config.update(config_edit or {})
  with open(f'{dest}/config.json', 'w') as f:
    json.dump(hf_config, f)
  if weights:
    shutil.copy(f'{hf_dir}/model.safetensors', dest)
  return str(dest)


@pytest.mark.parametrize('edit, message', [
    ({'activation_function': 'relu'}, r"activation_function='relu' is not supported"),
    ({'layer_norm_epsilon': 1e-6}, r'layer_norm_epsilon=1e-06 is not supported'),
    ({'tie_word_embeddings': False}, r'tie_word_embeddings=False is not supported'),
    ({'model_type': 'bert'}, r"model_type='bert' is not supported; jaxlm reads gpt2"),
    ({'n_layer': 3}, r'tensor h\.2\.\S+ is missing'),
])
def test_unsupported_configs_are_one_line_errors(hf, tmp_path, edit, message):
  hf_dir = _hf_copy(hf.path, tmp_path / 'hf', config_edit=edit)
  with pytest.raises(ConfigError, match=message) as e:
    hf_interop.import_run(hf_dir, str(tmp_path / 'run'))
  assert '\n' not in str(e.value)
  assert not os.path.exists(tmp_path / 'run')


def test_missing_and_pickled_inputs_are_one_line_errors(hf, tmp_path):
  cases = {
      str(tmp_path / 'nowhere'): r'--hf_dir=\S+ is not a directory',
      str(tmp_path / 'empty'): r'has no config\.json',
      _hf_copy(hf.path, tmp_path / 'pickled', weights=False): r'pytorch_model\.bin but no'
                                                             r' model\.safetensors; only'
                                                             r' safetensors is read',
  }
  os.makedirs(tmp_path / 'empty')
  with open(tmp_path / 'pickled' / 'pytorch_model.bin', 'wb') as f:
    f.write(b'never unpickled')
  for hf_dir, message in cases.items():
    with pytest.raises(ConfigError, match=message) as e:
      hf_interop.import_run(hf_dir, str(tmp_path / 'run'))
    assert '\n' not in str(e.value)
  with pytest.raises(ConfigError, match=r'holds no checkpoint in checkpoints/'):
    hf_interop.export_run(str(tmp_path / 'empty'), str(tmp_path / 'out'))
  config = config_lib.from_configdict(load_configdict(testdata.REPO / 'experiments/gpt_small.py'))
  with pytest.raises(ConfigError, match=r'is neither GPT-2 .* nor Llama-style'):
    hf_interop.check_exportable(dataclasses.replace(config.model, use_bias=False))


def test_never_overwrites(hf, run, tmp_path):
  before = sorted(os.listdir(os.path.join(run, 'checkpoints')))
  with pytest.raises(ConfigError, match=r'--workdir=\S+ already exists and is not empty'):
    hf_interop.import_run(hf.path, run)
  assert sorted(os.listdir(os.path.join(run, 'checkpoints'))) == before
  out = tmp_path / 'taken'
  os.makedirs(out)
  (out / 'keep.txt').write_text('mine')
  with pytest.raises(ConfigError, match=r'--out_dir=\S+ already exists and is not empty'):
    hf_interop.export_run(run, str(out))
  assert os.listdir(out) == ['keep.txt']


def test_cli_prints_one_line_error(tmp_path):
  result = forked.run_module(['jaxlm.hf', 'import', f'--hf_dir={tmp_path}/nowhere',
                               f'--workdir={tmp_path}/run'], os.getcwd())
  assert result.returncode == 1
  assert result.stderr.startswith('error: --hf_dir=')
  assert result.stderr.count('\n') == 1 and 'Traceback' not in result.stderr
