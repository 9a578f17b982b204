"""The lm-eval harness adapter (jaxlm/inference/lm_eval.py, python -m jaxlm.lm_eval).

Parity: a random small Llama with a byte-level BPE tokenizer that adds a BOS
(so context/continuation splits, the BOS and left truncation all matter), run
by the harness's own `hf` backend and, imported, by `jaxlm`, on the local
tasks of tests/assets/lm_eval: multiple choice (acc, acc_norm), rolling
perplexity and greedy generation. Some requests are longer than the
context of 64 tokens, so both truncate. Offline: the tasks read local JSONL
through the datasets `json` builder.
"""

import contextlib
import glob
import json
import os
import subprocess
import sys

os.environ['HF_DATASETS_OFFLINE'] = '1'  # before the harness imports datasets
os.environ['HF_HUB_OFFLINE'] = '1'

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import jaxlm  # noqa: E402
from jaxlm.config import ConfigError  # noqa: E402
from jaxlm.inference import lm_eval as adapter  # noqa: E402
from tests import configs, forked, testdata  # noqa: E402
from tests.interop.hf_llama_test import COMMON, FAMILIES  # noqa: E402

TASKS_DIR = testdata.ASSETS / 'lm_eval'  # relative data_files: the harness runs from REPO
TASKS = ['jaxlm_mc', 'jaxlm_text', 'jaxlm_gen']
# Stop strings this random model does produce, so that generate_until's cut is exercised.
GEN_KWARGS = {'until': ['\n', '.', ' and', ' o'], 'max_gen_toks': 12, 'do_sample': False}


def _texts():
  for name in ('mc', 'text', 'gen'):
    for line in (TASKS_DIR / f'{name}.jsonl').read_text().splitlines():
      for value in json.loads(line).values():
        yield ' '.join(value) if isinstance(value, list) else str(value)


def _bpe_tokenizer():
  """Byte-level BPE trained on the tasks' text; <pad> <s> </s> are ids 0 1 2 (the models'
  bos 1, eos 2) and encoding with special tokens puts <s> first, as Llama's does."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(_texts(), trainers.BpeTrainer(
      vocab_size=384, special_tokens=['<pad>', '<s>', '</s>'], show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  tok.post_processor = processors.TemplateProcessing(single='<s> $A',
                                                     special_tokens=[('<s>', 1)])
  return tok


@pytest.fixture(scope='module')
def hf_dir(tmp_path_factory) -> str:
  """A random float32 Llama (hf_llama_test's) whose vocabulary is the tokenizer's."""
  import torch
  tok = _bpe_tokenizer()
  config_cls, model_cls, extra = FAMILIES['llama']
  torch.manual_seed(0)
  model = model_cls(config_cls(**{**COMMON, 'vocab_size': tok.get_vocab_size()}, **extra))
  with torch.no_grad():  # init leaves norms 1: perturb every weight
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  path = tmp_path_factory.mktemp('hf') / 'llama'
  model.eval().save_pretrained(str(path), safe_serialization=True)
  tok.save(str(path / 'tokenizer.json'))
  (path / 'tokenizer_config.json').write_text(json.dumps({
      'tokenizer_class': 'PreTrainedTokenizerFast', 'bos_token': '<s>', 'eos_token': '</s>',
      'pad_token': '<pad>', 'clean_up_tokenization_spaces': False}))
  return str(path)


@pytest.fixture(scope='module')
def run(hf_dir, tmp_path_factory) -> str:
  workdir = str(tmp_path_factory.mktemp('runs') / 'llama')
  jaxlm.import_hf(hf_dir, workdir)
  return workdir


def _evaluate(model: str, model_args: str) -> dict:
  import lm_eval
  from lm_eval.tasks import TaskManager
  with contextlib.chdir(testdata.REPO):
    return lm_eval.simple_evaluate(
        model=model, model_args=model_args, tasks=TASKS, log_samples=True, bootstrap_iters=0,
        gen_kwargs=GEN_KWARGS,
        task_manager=TaskManager(include_path=str(TASKS_DIR), include_defaults=False))


@pytest.fixture(scope='module')
def both(hf_dir, run) -> tuple[dict, dict]:
  """(jaxlm's results, the hf backend's) on the same model and tasks."""
  ours = _evaluate('jaxlm', f'workdir={run}')
  theirs = _evaluate('hf', f'pretrained={hf_dir},dtype=float32,device=cpu')
  return ours, theirs


def _responses(results: dict, task: str) -> list:
  samples = sorted(results['samples'][task], key=lambda s: s['doc_id'])
  return [s['resps'] for s in samples]


@pytest.mark.slow
def test_multiple_choice_accuracy_equals_the_hf_backend(both):
  ours, theirs = both
  a, b = ours['results']['jaxlm_mc'], theirs['results']['jaxlm_mc']
  print(f"jaxlm_mc: acc {a['acc,none']:.4f} / {b['acc,none']:.4f}, acc_norm"
        f" {a['acc_norm,none']:.4f} / {b['acc_norm,none']:.4f} (jaxlm / hf)")
  assert (a['acc,none'], a['acc_norm,none']) == (b['acc,none'], b['acc_norm,none'])
  assert a['sample_len'] == b['sample_len'] == 24
  ll_ours = np.array([[r[0][0] for r in doc] for doc in _responses(ours, 'jaxlm_mc')])
  ll_theirs = np.array([[r[0][0] for r in doc] for doc in _responses(theirs, 'jaxlm_mc')])
  greedy = [[[r[0][1] for r in doc] for doc in _responses(x, 'jaxlm_mc')]
            for x in (ours, theirs)]
  print(f'max |loglikelihood diff| over {ll_ours.size} choices:'
        f' {np.abs(ll_ours - ll_theirs).max():.3g}')
  np.testing.assert_allclose(ll_ours, ll_theirs, atol=1e-4, rtol=0)
  assert greedy[0] == greedy[1]


@pytest.mark.slow
def test_rolling_perplexity_equals_the_hf_backend(both):
  ours, theirs = both
  a, b = ours['results']['jaxlm_text'], theirs['results']['jaxlm_text']
  for metric in ('word_perplexity,none', 'byte_perplexity,none', 'bits_per_byte,none'):
    print(f'jaxlm_text {metric}: {a[metric]:.6f} / {b[metric]:.6f} (jaxlm / hf)')
    assert a[metric] == pytest.approx(b[metric], rel=1e-4)
  ll = [[doc[0][0] for doc in _responses(x, 'jaxlm_text')] for x in (ours, theirs)]
  np.testing.assert_allclose(ll[0], ll[1], atol=1e-4, rtol=0)


@pytest.mark.slow
def test_greedy_generations_equal_the_hf_backend(both):
  ours, theirs = both
  texts = [[doc[0] for doc in _responses(x, 'jaxlm_gen')] for x in (ours, theirs)]
  assert texts[0] == texts[1]
  assert any(len(t) < 12 for t in texts[0])  # some were cut at a stop string
  assert ours['results']['jaxlm_gen']['exact_match,none'] == \
      theirs['results']['jaxlm_gen']['exact_match,none']


def test_some_requests_outgrow_the_context(hf_dir):
  """So the parity above covers left truncation and rolling windows of several."""
  import tokenizers
  tok = tokenizers.Tokenizer.from_file(f'{hf_dir}/tokenizer.json')
  mc = [json.loads(line) for line in (TASKS_DIR / 'mc.jsonl').read_text().splitlines()]
  lengths = [len(tok.encode(f"Question: {d['question']}\nAnswer: {d['choices'][0]}").ids)
             for d in mc]
  text = [json.loads(line)['text'] for line in
          (TASKS_DIR / 'text.jsonl').read_text().splitlines()]
  assert max(lengths) > COMMON['max_position_embeddings'] > min(lengths)
  assert max(len(tok.encode(t).ids) for t in text) > 2 * COMMON['max_position_embeddings']


# --- The pieces -------------------------------------------------------------


def test_score_window_keeps_the_last_max_len_tokens():
  assert adapter.score_window([1, 2, 3], [4, 5], 8) == [1, 2, 3, 4]
  assert adapter.score_window([1, 2, 3, 4, 5, 6], [7, 8], 4) == [4, 5, 6, 7]
  with pytest.raises(ConfigError, match='longer than the context'):
    adapter.score_window([1], [2, 3, 4], 2)


def test_continuation_scores_are_log_softmax_sums():
  logits_TV = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]], np.float32))
  logp, greedy = adapter.continuation_scores(logits_TV, [0, 2])
  assert logp == pytest.approx(np.log(0.5) + np.log(0.8), abs=1e-6) and greedy
  assert not adapter.continuation_scores(logits_TV, [1, 2])[1]


def test_generation_settings_and_the_cut():
  until, n, sampling = adapter.generation_settings(
      {'until': 'Q:', 'max_new_tokens': 5, 'do_sample': False, 'temperature': 0.7}, 256)
  assert (until, n, sampling) == (['Q:'], 5, {'temperature': 0.0})
  until, n, sampling = adapter.generation_settings({'temperature': 0.5, 'top_p': 0.9}, 256)
  assert (until, n, sampling) == ([], 256, {'temperature': 0.5, 'top_k': 0, 'top_p': 0.9})
  assert adapter.stop_at('a b.\nc', ['\n', '.']) == 'a b'
  assert adapter.through_first([5, 2, 7, 2], 2) == [5, 2]
  assert adapter.through_first([5, 7], 2) == [5, 7]


def test_bad_model_args_are_one_line(tmp_path):
  from lm_eval.api.registry import get_model
  cls = get_model('jaxlm')
  for args, message in ((dict(), 'model_args needs workdir=RUN'),
                        (dict(workdir=str(tmp_path / 'nope')), 'does not exist'),
                        (dict(workdir='x', pretrained='gpt2'), 'pretrained: not an argument'),
                        (dict(workdir=str(tmp_path)), 'holds no config.json')):
    with pytest.raises(ConfigError, match=message):
      cls(**args)
  with pytest.raises(ConfigError, match='batch_size=0 must be a positive integer'):
    adapter._batch_size(0)
  assert adapter._batch_size('auto') == adapter._batch_size(None) == adapter.DEFAULT_BATCH


def test_import_jaxlm_registers_the_model_type_without_jax():
  script = ('import sys, jaxlm\n'
            'from lm_eval.api.registry import model_registry as r\n'
            "print('jaxlm' in r, 'hf' in r, 'jax' in sys.modules,"
            " 'jaxlm.inference.lm_eval' in sys.modules)\n"
            'from lm_eval.api.registry import get_model\n'
            "print(get_model('jaxlm').__module__)\n")
  out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(testdata.REPO)), timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.split('\n')[:2] == ['True True False False', 'jaxlm.inference.lm_eval']


# --- The command, on a trained run ----------------------------------------------


@pytest.fixture(scope='module')
def trained(tmp_path_factory) -> str:
  """A run jaxlm trained itself (char tokens, no BOS), 4 steps, context 64."""
  from jaxlm.training import loop
  workdir = str(tmp_path_factory.mktemp('trained') / 'run')
  corpus = os.path.join(testdata.shakespeare_dir(), 'input.txt')
  loop.run(configs.tiny_run_config(corpus, model__max_len=64, data__seq_len=64,
                                   train__steps=4, train__eval_every=4), workdir)
  return workdir


@pytest.mark.slow
def test_the_command_prints_the_table_and_writes_the_json(trained):
  out = forked.run_module(
      ['jaxlm.lm_eval', f'--workdir={trained}', '--tasks=jaxlm_mc,jaxlm_text',
       '--include_path=tests/assets/lm_eval', '--limit=6'], testdata.REPO, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'Traceback' not in out.stderr
  lines = out.stdout.splitlines()
  assert lines[0].startswith(f'jaxlm {trained} step 4 (float32), limit: 6'), out.stdout
  assert any(line.startswith('|jaxlm_mc  |') and '|acc ' in line for line in lines), out.stdout
  assert any('|word_perplexity|' in line for line in lines), out.stdout
  files = glob.glob(f'{trained}/lm_eval/results_*.json')
  assert len(files) == 1 and lines[-1] == f'wrote {files[0]}'
  with open(files[0]) as f:
    results = json.load(f)
  assert results['config']['model'] == 'jaxlm' and results['config']['step'] == 4
  acc = results['results']['jaxlm_mc']['acc,none']
  assert 0 <= acc <= 1 and results['results']['jaxlm_mc']['sample_len'] == 6
  table_acc = next(line for line in lines if line.startswith('|jaxlm_mc'))
  assert f'{acc:.4f}' in table_acc
