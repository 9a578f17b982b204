"""Generation: the KV cache against full recomputation, batching, sharding, sampling."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm.inference import generate
from jaxlm.parallel import sharding
from jaxlm.training import steps as steps_lib
from jaxlm.inference.generate import Sampling
from jaxlm.model.gpt import GPT, init_cache
from tests.configs import LLAMA_BLOCKS, tiny_config

RTOL, ATOL = 1e-5, 1e-5  # float32; the cached path sums in another order
PROMPTS = [[5, 9, 2], [7, 1, 3, 3, 8, 12, 40, 2, 9], [33]]


@functools.lru_cache(maxsize=None)
def _setup(**overrides):
  """A tiny model with weights spread wider than at init, so greedy text varies."""
  cfg = tiny_config(**overrides)
  model = GPT(cfg.model)
  shapes = steps_lib.abstract_params(model, cfg.data.seq_len)
  leaves, tree = jax.tree.flatten(sharding.unbox_shapes(shapes))
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  params = tree.unflatten([0.3 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])
  return cfg, model, params


@functools.partial(jax.jit, static_argnames='model')
def _forward(params, tokens_1W, *, model):
  return model.apply({'params': params}, tokens_1W)[0]


def _full_logits(model, params, tokens):
  """Logits [len(tokens), V] by a full forward pass (padded: one compile)."""
  padded = np.zeros((1, model.cfg.max_len), np.int32)
  padded[0, :len(tokens)] = tokens
  return np.asarray(_forward(params, jnp.asarray(padded), model=model))[:len(tokens)]


def _reference_greedy(model, params, prompt, n):
  """Greedy by full recomputation; past max_len the context restarts from its last half."""
  W = model.cfg.max_len
  context, out = list(prompt), []
  for _ in range(n):
    token = int(np.argmax(_full_logits(model, params, context)[-1]))
    out.append(token)
    context.append(token)
    if len(context) > W:
      context = context[-(W // 2):]
  return out


LLAMA = dict(**LLAMA_BLOCKS,
             model__num_kv_heads=2, model__qkv_bias=True)


@pytest.mark.parametrize('overrides', [{}, LLAMA], ids=['gpt2', 'llama-gqa'])
def test_cached_logits_equal_full_recomputation_at_every_position(overrides):
  """A padded prefill then one token per step: every row's logits, every position.

  With biases and an untied head (the tests below use the tied default); with
  Llama's blocks, grouped-query attention's cache of 2 kv heads and RoPE positions.
  """
  cfg, model, params = _setup(model__use_bias=True, model__tie_embeddings=False, **overrides)
  L = cfg.model.max_len
  tokens = np.asarray(jax.random.randint(jax.random.PRNGKey(2), (2, L), 0, cfg.model.vocab_size))
  lengths = np.array([3, 6])
  full = np.stack([_full_logits(model, params, row) for row in tokens])

  step = jax.jit(lambda p, c, t: model.apply({'params': p}, t, cache=c))
  prompt = np.where(np.arange(6)[None] < lengths[:, None], tokens[:, :6], 0)  # right-padded
  logits, cache = step(params, init_cache(cfg.model, 2, L), jnp.asarray(prompt))
  for b, n in enumerate(lengths):
    np.testing.assert_allclose(logits[b, :n], full[b, :n], rtol=RTOL, atol=ATOL)
  cache['index'] = jnp.broadcast_to(jnp.asarray(lengths)[None], cache['index'].shape)
  for i in range(L - 3):
    pos = lengths + i
    feed = np.where(pos < L, tokens[np.arange(2), np.minimum(pos, L - 1)], 0)
    logits, cache = step(params, cache, jnp.asarray(feed[:, None]))
    for b in range(2):
      if pos[b] < L:
        np.testing.assert_allclose(logits[b, 0], full[b, pos[b]], rtol=RTOL, atol=ATOL)
  assert cache['index'][0].tolist() == (lengths + L - 3).tolist()


def test_greedy_equals_full_recomputation_within_and_past_the_context():
  cfg, model, params = _setup()
  W = cfg.model.max_len
  short = generate.generate(params, model, PROMPTS, 6)
  assert not short.shifted
  long = generate.generate(params, model, PROMPTS, 2 * W + 3)
  assert long.shifted
  for i, prompt in enumerate(PROMPTS):
    assert short.tokens[i][0] == _reference_greedy(model, params, prompt, 6)
    reference = _reference_greedy(model, params, prompt, 2 * W + 3)
    assert long.tokens[i][0] == reference
    assert len(set(reference)) > 4  # the text varies: the comparison means something


def test_greedy_is_deterministic_and_the_same_on_a_data_model_mesh():
  cfg, model, params = _setup()
  one = generate.generate(params, model, PROMPTS, 6)
  assert generate.generate(params, model, PROMPTS, 6) == one

  devices = np.asarray(jax.devices()).reshape(2, 4, 1)
  mesh = jax.sharding.Mesh(devices, sharding.MESH_AXES,
                           axis_types=(jax.sharding.AxisType.Auto,) * 3)
  with sharding.activate(mesh):
    shardings = sharding.mesh_shardings(steps_lib.abstract_params(model, 16), mesh)
    placed = jax.device_put(params, shardings)
    assert placed['stack']['blocks']['attn']['qkv'].sharding.spec[3] == 'model'
    meshed = generate.generate(placed, model, PROMPTS, 6)

    # The cache: rows over data (2), heads over model (4).
    rows = (jnp.zeros((4, 3), jnp.int32), jnp.full((4,), 3), jnp.zeros((4,), jnp.uint32))
    batch = jax.device_put(rows, sharding.batch_sharding(mesh))
    _, cache = generate.prefill(placed, *batch, 0, model=model, sampling=Sampling(), cache_len=8)
    N, H, K = cfg.model.num_layers, cfg.model.num_heads, cfg.model.head_dim
    for name in ('k', 'v'):
      assert cache[name].shape == (N, 4, 8, H, K)
      assert {s.data.shape for s in cache[name].addressable_shards} == {(N, 2, 8, H // 4, K)}
    assert {s.data.shape for s in cache['index'].addressable_shards} == {(N, 2)}
  assert meshed == one


def test_prompts_of_different_lengths_in_one_batch_give_what_each_gives_alone():
  """Sampled (greedy: the test above compares each row with its own recomputation)."""
  _, model, params = _setup()
  sampling = Sampling(temperature=1.0, top_k=20, top_p=0.9)
  prompts = PROMPTS[:2]  # 3 and 9 tokens
  together = generate.generate(params, model, prompts, 6, sampling=sampling, seed=3,
                               num_samples=2)
  for i, prompt in enumerate(prompts):
    alone = generate.generate(params, model, [prompt], 6, sampling=sampling, seed=3,
                              num_samples=2)
    assert alone.tokens[0] == together.tokens[i]


def test_sampling_with_a_seed_reproduces_and_samples_differ():
  _, model, params = _setup()
  sampling = Sampling(temperature=1.0)
  a = generate.generate(params, model, PROMPTS[:1], 12, sampling=sampling, seed=7, num_samples=3)
  b = generate.generate(params, model, PROMPTS[:1], 12, sampling=sampling, seed=7, num_samples=3)
  c = generate.generate(params, model, PROMPTS[:1], 12, sampling=sampling, seed=8, num_samples=3)
  assert a == b
  assert a.tokens != c.tokens
  assert len({tuple(s) for s in a.tokens[0]}) == 3


def test_top_k_1_and_a_tiny_top_p_are_greedy():
  logits_BV = 3.0 * jax.random.normal(jax.random.PRNGKey(0), (64, 64))
  greedy_B = np.argmax(logits_BV, axis=-1)
  keys_B = jax.random.split(jax.random.PRNGKey(1), 64)
  for sampling in (Sampling(temperature=2.0, top_k=1), Sampling(temperature=2.0, top_p=1e-6)):
    np.testing.assert_array_equal(generate.choose(logits_BV, keys_B, sampling), greedy_B)
  sampled_B = generate.choose(logits_BV, keys_B, Sampling(temperature=2.0))
  assert (np.asarray(sampled_B) != greedy_B).any()


def test_filter_keeps_the_top_k_then_the_top_p_mass():
  # probabilities 0.5, 0.25, 0.125, 0.125 (in a shuffled order)
  logits = jnp.log(jnp.asarray([[0.125, 0.5, 0.125, 0.25]]))
  kept = lambda k, p: np.isfinite(np.asarray(generate._filter(logits, k, p)))[0].tolist()
  assert kept(0, 1.0) == [True] * 4
  assert kept(2, 1.0) == [False, True, False, True]
  assert kept(0, 0.5) == [False, True, False, False]  # 0.5 reaches 0.5
  assert kept(0, 0.6) == [False, True, False, True]
  assert kept(1, 0.9) == [False, True, False, False]


def test_sample_for_the_training_run():
  _, model, params = _setup()
  # A prompt longer than the context keeps its last max_len tokens.
  long = list(range(40))
  assert generate.sample(params, model, long, 5, temperature=0.0) == \
      _reference_greedy(model, params, long[-16:], 5)


@pytest.mark.parametrize('prompts, kwargs, match', [
    ([], {}, r'no prompts given'),
    ([[1], []], {}, r'prompt 1 is empty'),
    ([list(range(17))], {}, r'prompt 0 has 17 tokens, more than the context of model\.max_len=16'),
    ([[1, 64]], {}, r'prompt 0 holds ids outside \[0, 64\)'),
    ([[1]], {'max_new_tokens': -1}, r'max_new_tokens=-1 must be >= 0'),
    ([[1]], {'num_samples': 0}, r'num_samples=0 must be >= 1'),
    ([[1]], {'seed': -1}, r'seed=-1 must be in \[0, 2\*\*32\)'),
])
def test_bad_inputs_are_one_line_errors(prompts, kwargs, match):
  _, model, params = _setup()
  kwargs = {'max_new_tokens': 4, **kwargs}
  n = kwargs.pop('max_new_tokens')
  with pytest.raises(ValueError, match=match) as e:
    generate.generate(params, model, prompts, n, **kwargs)
  assert '\n' not in str(e.value)


@pytest.mark.parametrize('kwargs, match', [
    ({'temperature': -1.0}, r'temperature=-1\.0 must be >= 0'),
    ({'top_k': -2}, r'top_k=-2 must be >= 0'),
    ({'top_p': 0.0}, r'top_p=0\.0 must be in \(0, 1\]'),
    ({'top_p': 1.5}, r'top_p=1\.5 must be in \(0, 1\]'),
])
def test_bad_sampling_settings_are_one_line_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    Sampling(**kwargs)
