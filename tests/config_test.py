"""Configs: every experiment builds; bad settings fail with the setting's name."""

import glob
import os

import jax
import jax.numpy as jnp
import pytest

from jaxlm import config as config_lib
from jaxlm.parallel import sharding
from jaxlm.training import steps as steps_lib
from jaxlm.experiments import load_configdict
from jaxlm.model.gpt import count_params
from tests import testdata

REPO = testdata.REPO
GPT_SMALL = REPO / 'experiments/gpt_small.py'

# Pretraining experiments (run by jaxlm.main); fine-tuning ones (with a classifier
# section) have their own tests.
EXPERIMENTS = [path for path in sorted(glob.glob(os.path.join(REPO, 'experiments', '*.py')))
               if 'classifier' not in load_configdict(path)]


@pytest.mark.parametrize('path', EXPERIMENTS, ids=os.path.basename)
def test_every_experiment_builds_under_eval_shape(path):
  cd = load_configdict(path)
  if cd.model.vocab_size == 0:
    cd.model.vocab_size = 256  # normally from the tokenizer
  cfg = config_lib.from_configdict(cd)
  n = max(k for k in range(1, 9) if cfg.data.batch_size % k == 0)  # 4 for batch 12
  mesh = sharding.make_mesh(cfg.parallel, jax.devices()[:n])
  batch = cfg.data.batch_size
  with sharding.activate(mesh):
    s = steps_lib.build(cfg, mesh)
    state = jax.eval_shape(s.init)
    tokens = jax.ShapeDtypeStruct((batch, cfg.data.seq_len), jnp.int32)
    _, metrics = jax.eval_shape(s.train, state, {'inputs': tokens, 'targets': tokens})
  assert metrics['loss'].shape == ()
  if os.path.basename(path) == 'gpt2_124m.py':
    assert cfg.model.vocab_size == 50304
    assert 124e6 < count_params(state.params) < 125e6


def test_gpt_small_is_nanogpts_cpu_recipe():
  cfg = config_lib.from_configdict(load_configdict(GPT_SMALL))
  m, d, t = cfg.model, cfg.data, cfg.train
  assert (m.num_layers, m.num_heads, m.d_model, d.seq_len, d.batch_size) == (4, 4, 128, 64, 12)
  assert (t.steps, t.learning_rate, t.beta2, m.dropout) == (2000, 1e-3, 0.99, 0.0)


@pytest.mark.parametrize('override, match', [
    ({'model.dropout': 1.5}, r'model\.dropout=1\.5 must be in \[0, 1\)'),
    ({'model.dtype': 'float8'}, r"model\.dtype='float8' is not one of"),
    ({'data.seq_len': 128}, r'data\.seq_len=128 exceeds model\.max_len=64'),
    ({'train.grad_accum_steps': 5},
     r'train\.grad_accum_steps=5 does not divide data\.batch_size=12'),
    ({'data.source': 'files'}, r'data\.source=files needs data\.train_files'),
    ({'data.source': 'http'}, r"data\.source='http' is not one of: tfds, files"),
    ({'train.warmup_steps': 5000}, r'train\.warmup_steps=5000 must be in \[0, train\.steps=2000\]'),
    ({'parallel.model': 0}, r'parallel\.model=0 must be a positive size or -1'),
    ({'parallel.pipeline': 3},
     r'model\.num_layers=4 does not split into parallel\.pipeline=3 stages'),
    ({'parallel.zero_stage': 4}, r'parallel\.zero_stage=4 must be 0, 1, 2 or 3'),
    ({'parallel.remat': 'some'}, r"parallel\.remat='some' is not one of: none, full, matmuls"),
    ({'data.tokenizer': 'bpe', 'data.vocab_size': 100},
     r'data\.tokenizer=bpe needs data\.vocab_size >= 257 \(the 256 bytes and <\|endoftext\|>\),'
     r' not 100'),
    ({'data.tokenizer': 'tiktoken'}, r'data\.tokenizer=tiktoken needs data\.tokenizer_file=PATH'),
    ({'data.tokenizer_file': 'tok.json'},
     r'data\.tokenizer_file=tok\.json is read only with data\.tokenizer=huggingface or tiktoken,'
     r' not char'),
    ({'data.tokenizer': 'sentencepiece', 'data.vocab_size': 0},
     r'data\.tokenizer=sentencepiece needs data\.vocab_size > 0'),
])
def test_bad_settings(override, match):
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.from_configdict(load_configdict(GPT_SMALL, override))


@pytest.mark.parametrize('override', [
    {'data.tokenizer': 'bpe', 'data.vocab_size': 257},
    {'data.tokenizer': 'tiktoken', 'data.tokenizer_file': 'r50k_base.tiktoken'},
    {'data.tokenizer': 'huggingface', 'data.tokenizer_file': 'tokenizer.json'},
    {'data.tokenizer': 'huggingface'},  # an import's, in the run folder
])
def test_tokenizer_settings_that_are_valid(override):
  config_lib.from_configdict(load_configdict(GPT_SMALL, override))


@pytest.mark.parametrize('override, match', [
    ({'data.tokenizer': 'tiktoken'},
     r'data\.tokenizer=tiktoken in fine-tuning reuses the tokenizer of classifier\.init_from'),
    ({'data.tokenizer': 'bpe', 'data.vocab_size': 0}, r'data\.tokenizer=bpe needs data\.vocab'),
])
def test_bad_classifier_tokenizer_settings(override, match):
  path = REPO / 'experiments/agnews_classifier.py'
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.from_configdict(load_configdict(path, override))
  # With init_from the tokenizer (and its size) is the pretrained run's.
  config_lib.from_configdict(load_configdict(path, {**override, 'classifier.init_from': 'run'}))


def test_unknown_setting_is_named():
  cd = load_configdict(GPT_SMALL)
  cd.model.unlock()
  cd.model.num_layer = 3  # a typo
  with pytest.raises(config_lib.ConfigError, match=r'unknown setting\(s\) model\.num_layer'):
    config_lib.from_configdict(cd)


def _parallel(data, model, pipeline):
  return config_lib.ParallelConfig(data, model, pipeline, 0, config_lib.Remat.NONE,
                                   1, config_lib.Schedule.GPIPE, 1)


def test_mesh_fill_and_mismatch():
  p = _parallel(-1, 2, 1)
  assert sharding.mesh_shape(p, 8) == (4, 2, 1)
  with pytest.raises(config_lib.ConfigError, match=r'parallel\.model\*pipeline=3 does not divide'):
    sharding.mesh_shape(_parallel(-1, 3, 1), 8)


def test_a_logical_axis_without_a_rule_is_an_error():
  from flax import linen as nn
  boxed = {'w': nn.Partitioned(jnp.zeros((4, 4)), names=('embed', 'typo_axis'))}
  mesh = sharding.make_mesh(_parallel(-1, 1, 1))
  with pytest.raises(ValueError, match="logical axis 'typo_axis' has no rule"):
    sharding.mesh_shardings(boxed, mesh)
  with sharding.activate(mesh), pytest.raises(ValueError, match='did not match a rule'):
    jax.jit(lambda x: sharding.constrain(x, ('batch', 'typo_axis')))(jnp.zeros((8, 4)))


def test_experiment_paths_are_relative_to_the_current_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # never looked up next to the package
  with pytest.raises(FileNotFoundError, match=r'no experiment file experiments/gpt_small\.py'):
    load_configdict('experiments/gpt_small.py')
  (tmp_path / 'experiments').symlink_to(REPO / 'experiments')
  assert load_configdict('experiments/gpt_small.py').model.num_layers == 4
  csv = load_configdict('experiments/agnews_classifier.py:csv')  # FILE.py:VARIANT, as --config
  assert csv.data.source == 'csv'
