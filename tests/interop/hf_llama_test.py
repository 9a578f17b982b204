"""Llama, Mistral and Qwen2 through the public API: logits and greedy decoding equal
transformers', export round-trips bit for bit, bad folders are one line.

Random small models with odd shapes, so that a transposed or misread tensor
cannot pass: vocab 101 (not a multiple of 8), 3 layers, head dim 16, one or
two kv heads (grouped and multi-query attention), q/k/v biases (Qwen2),
Llama 3.1 RoPE scaling, tied and untied output embeddings.
"""

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
import torch  # test-only dependency (requirements.txt): the reference implementation
import transformers
from safetensors.numpy import load_file, save_file

import jaxlm
from jaxlm.config import ConfigError

COMMON = dict(vocab_size=101, hidden_size=64, intermediate_size=80, num_hidden_layers=3,
              num_attention_heads=4, head_dim=16, max_position_embeddings=64,
              bos_token_id=1, eos_token_id=2)
FAMILIES = {
    # GQA (2 query heads per kv head), Llama 3.1 frequencies, untied head.
    'llama': (transformers.LlamaConfig, transformers.LlamaForCausalLM, dict(
        num_key_value_heads=2, rms_norm_eps=1e-5, tie_word_embeddings=False,
        rope_parameters={'rope_type': 'llama3', 'rope_theta': 500000.0, 'factor': 8.0,
                         'low_freq_factor': 1.0, 'high_freq_factor': 4.0,
                         'original_max_position_embeddings': 16})),
    # Multi-query attention (one kv head), a sliding window longer than the context.
    'mistral': (transformers.MistralConfig, transformers.MistralForCausalLM, dict(
        num_key_value_heads=1, sliding_window=None, tie_word_embeddings=False,
        rope_parameters={'rope_type': 'default', 'rope_theta': 10000.0})),
    # Multi-head with q/k/v biases and tied embeddings.
    'qwen2': (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, dict(
        num_key_value_heads=4, tie_word_embeddings=True, rms_norm_eps=1e-6,
        rope_parameters={'rope_type': 'default', 'rope_theta': 1000000.0})),
}
TOKENS_BL = np.random.default_rng(0).integers(0, 101, (2, 40))


@dataclasses.dataclass(frozen=True)
class Reference:
  family: str
  path: str  # what save_pretrained wrote
  model: torch.nn.Module
  logits_BLV: np.ndarray  # transformers' float32 logits for TOKENS_BL


def _torch_logits(model, tokens_BL) -> np.ndarray:
  with torch.no_grad():
    return model(torch.tensor(tokens_BL)).logits.numpy()


@pytest.fixture(scope='module', params=sorted(FAMILIES))
def hf(request, tmp_path_factory) -> Reference:
  """A random model of the family saved as safetensors, every weight perturbed."""
  family = request.param
  config_cls, model_cls, extra = FAMILIES[family]
  torch.manual_seed(0)
  model = model_cls(config_cls(**COMMON, **extra)).eval()
  with torch.no_grad():  # init leaves norms 1 and biases 0: perturb them all
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  path = str(tmp_path_factory.mktemp('hf') / family)
  model.save_pretrained(path, safe_serialization=True)
  if family == 'llama':  # one family brings a tokenizer.json (the others: ids only)
    _word_tokenizer().save(os.path.join(path, 'tokenizer.json'))
  return Reference(family, path, model, _torch_logits(model, TOKENS_BL))


WORDS = [f'w{i}' for i in range(100)]  # ids 1..100; 0 is [UNK]


def _word_tokenizer():
  """A 101-token word-level tokenizer.json, the size of the random models' vocabulary."""
  import tokenizers
  vocab = {'[UNK]': 0, **{w: i + 1 for i, w in enumerate(WORDS)}}
  tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token='[UNK]'))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
  tok.decoder = tokenizers.decoders.WordPiece(prefix='##')  # joins words with spaces
  return tok


@pytest.fixture(scope='module')
def run(hf, tmp_path_factory) -> str:
  workdir = str(tmp_path_factory.mktemp('runs') / hf.family)
  jaxlm.import_hf(hf.path, workdir)
  return workdir


def test_logits_equal_transformers(hf, run):
  model = jaxlm.load(run)
  m = model.config.model
  assert (m.vocab_size, m.num_layers, m.head_dim, m.dtype) == (101, 3, 16, 'float32')
  assert m.kv_heads == {'llama': 2, 'mistral': 1, 'qwen2': 4}[hf.family]
  ours_BLV = model.logits(TOKENS_BL)
  diff = np.abs(ours_BLV - hf.logits_BLV).max()
  print(f'{hf.family}: max |logit diff| jaxlm vs transformers: {diff:.3g}')
  assert np.abs(hf.logits_BLV).max() > 0.5  # logits that can tell a wrong mapping apart
  assert diff < 1e-4


def test_greedy_decoding_with_the_cache_equals_transformers_generate(hf, run):
  prompts = [TOKENS_BL[0, :5].tolist(), TOKENS_BL[1, :9].tolist()]
  ours = jaxlm.load(run).generate(prompts, 12, temperature=0.0)
  for prompt, new in zip(prompts, ours):
    ids = torch.tensor([prompt])
    with torch.no_grad():  # (an explicit mask: else ids equal to pad_token_id count as padding)
      theirs = hf.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                                 min_new_tokens=12, do_sample=False, pad_token_id=0)
    assert new == theirs[0, len(prompt):].tolist()


def test_kv_cache_holds_the_kv_heads_only(run):
  from jaxlm.model import gpt
  m = jaxlm.load(run).config.model
  cache = gpt.init_cache(m, 2, 8)
  assert cache['k'].shape == (3, 2, 8, m.kv_heads, 16)


def test_export_round_trips_exactly(hf, run, tmp_path):
  out = str(tmp_path / 'exported')
  jaxlm.export_hf(run, out)
  assert sorted(os.listdir(out)) == sorted(
      ['config.json', 'generation_config.json', 'model.safetensors']
      + (['tokenizer.json'] if hf.family == 'llama' else []))
  if hf.family == 'llama':  # the imported tokenizer.json, byte for byte
    with open(f'{out}/tokenizer.json', 'rb') as a, open(f'{hf.path}/tokenizer.json', 'rb') as b:
      assert a.read() == b.read()
  original = load_file(f'{hf.path}/model.safetensors')
  exported = load_file(f'{out}/model.safetensors')
  assert sorted(exported) == sorted(original)
  for name, x in original.items():
    np.testing.assert_array_equal(exported[name], x, err_msg=name)
  with open(f'{out}/config.json') as f:
    config = json.load(f)
  assert config['model_type'] == hf.family
  assert config['architectures'] == [type(hf.model).__name__]
  with open(f'{out}/generation_config.json') as f:
    generation = json.load(f)
  assert (generation['bos_token_id'], generation['eos_token_id']) == (1, 2)
  model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
  np.testing.assert_array_equal(_torch_logits(model, TOKENS_BL), hf.logits_BLV)


def test_sample_and_evaluate_verbs_run_on_an_import(hf, run, tmp_path):
  """The command lines on an import: Llama's tokenizer.json came along, Qwen2 has none."""
  import subprocess
  import sys
  model = jaxlm.load(run)
  if hf.family == 'qwen2':  # no tokenizer: --tokens, ids in and ids out
    assert model.tokenizer is None
    result = subprocess.run(
        [sys.executable, '-m', 'jaxlm.sample', f'--workdir={run}', '--tokens=5,7,11',
         '--max_new_tokens=4', '--temperature=0'], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    greedy = model.generate([[5, 7, 11]], 4, temperature=0.0)[0]
    assert result.stdout.split() == [str(t) for t in greedy]
    return
  if hf.family != 'llama':
    pytest.skip('Llama and Qwen2 cover the command lines')
  assert model.tokenizer.kind.value == 'huggingface' and model.tokenizer.eos_id == 2
  hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_file=f'{hf.path}/tokenizer.json')
  text = ' '.join(WORDS[i] for i in TOKENS_BL[0, :30] % 100)
  ids = model.tokenizer.encode(text).tolist()
  assert ids == hf_tok.encode(text, add_special_tokens=False)
  # --prompt: text in, the prompt and its greedy continuation out.
  prompt = 'w4 w8 w15'
  result = subprocess.run(
      [sys.executable, '-m', 'jaxlm.sample', f'--workdir={run}', f'--prompt={prompt}',
       '--max_new_tokens=5', '--temperature=0'], capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr
  new = model.generate([prompt], 5, temperature=0.0)[0]
  cut = new[:new.index(2)] if 2 in new else new  # text stops at the EOS id
  assert result.stdout.strip() == hf_tok.decode(model.tokenizer.encode(prompt).tolist() + cut)
  # evaluate --text_files: the loss transformers gives the same windows.
  doc = tmp_path / 'doc.txt'
  doc.write_text(' '.join(WORDS[i] for i in np.random.default_rng(1).integers(0, 100, 150)))
  result = subprocess.run(
      [sys.executable, '-m', 'jaxlm.evaluate', f'--workdir={run}', f'--text_files={doc}'],
      capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr
  loss = float(result.stdout.split('loss ')[1].split()[0])
  stream = hf_tok.encode(doc.read_text(), add_special_tokens=False) + [2]  # + EOS
  L, nll = model.config.data.seq_len, 0.0
  for start in range(0, len(stream) - 1, L):
    window = stream[start:start + L + 1]
    logp = torch.log_softmax(torch.tensor(_torch_logits(hf.model, np.array([window[:-1]]))[0]),
                             -1)
    nll -= float(logp[torch.arange(len(window) - 1), torch.tensor(window[1:])].sum())
  assert loss == pytest.approx(nll / (len(stream) - 1), abs=1e-4)


def _copy(hf_dir, dest, *, config_edit=None, drop=None):
  shutil.copytree(hf_dir, dest)
  with open(f'{dest}/config.json') as f:
    config = json.load(f)
  config.update(config_edit or {})
  with open(f'{dest}/config.json', 'w') as f:
    json.dump(config, f)
  if drop:
    tensors = load_file(f'{dest}/model.safetensors')
    tensors.pop(drop)
    save_file(tensors, f'{dest}/model.safetensors', metadata={'format': 'pt'})
  return str(dest)


def test_bad_folders_are_one_line_errors(hf, tmp_path):
  if hf.family != 'llama':
    pytest.skip('the checks are the same for every family')
  cases = [
      ({'model_type': 'bert'}, None, r"model_type='bert' is not supported; jaxlm reads gpt2,"
                                     r' llama, mistral, qwen2'),
      ({'num_key_value_heads': 3}, None, r'num_key_value_heads=3 does not divide'
                                         r' num_attention_heads=4'),
      ({'head_dim': 15}, None, r'head_dim=15 is odd'),
      ({'hidden_act': 'gelu'}, None, r"hidden_act='gelu' is not supported"),
      ({'intermediate_size': 96}, None, r'tensor layers\.0\.mlp\.gate_proj\.weight has shape'),
      ({}, 'model.layers.2.mlp.up_proj.weight', r'tensor layers\.2\.mlp\.up_proj\.weight is'
                                               r' missing'),
  ]
  for i, (edit, drop, message) in enumerate(cases):
    hf_dir = _copy(hf.path, tmp_path / f'hf{i}', config_edit=edit, drop=drop)
    with pytest.raises(ConfigError, match=message) as e:
      jaxlm.import_hf(hf_dir, str(tmp_path / f'run{i}'))
    assert '\n' not in str(e.value)
    assert not os.path.exists(tmp_path / f'run{i}')


def test_a_missing_shard_is_one_line(hf, tmp_path):
  if hf.family != 'llama':
    pytest.skip('the checks are the same for every family')
  sharded = str(tmp_path / 'sharded')
  hf.model.save_pretrained(sharded, safe_serialization=True, max_shard_size='20KB')
  shards = sorted(n for n in os.listdir(sharded) if n.endswith('.safetensors'))
  assert len(shards) > 2
  # A complete sharded folder imports like the single file.
  jaxlm.import_hf(sharded, str(tmp_path / 'whole'))
  np.testing.assert_allclose(jaxlm.load(str(tmp_path / 'whole')).logits(TOKENS_BL),
                             hf.logits_BLV, atol=1e-4)
  os.remove(os.path.join(sharded, shards[1]))
  with pytest.raises(ConfigError, match=rf'names {shards[1]}, which \S+ lacks') as e:
    jaxlm.import_hf(sharded, str(tmp_path / 'run'))
  assert '\n' not in str(e.value)
