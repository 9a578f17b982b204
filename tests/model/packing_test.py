"""Packed rows through the model and the loss: each document computes what it computes alone."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm.data import packing
from jaxlm.model.gpt import GPT, init_cache, segment_mask
from jaxlm.tasks import lm
from tests.configs import LLAMA_BLOCKS, tiny_config

RTOL, ATOL = 1e-5, 1e-6  # float32, as tests/parallel/equivalence_test.py
# GPT-2 (learned positions, biases) and Llama's blocks with grouped-query attention (RoPE).
MODELS = {'gpt2': {'model__use_bias': True},
          'llama-gqa': dict(**LLAMA_BLOCKS, model__num_kv_heads=2)}
SIZES = [3, 6, 9, 17, 6, 3, 17, 9, 9, 3, 6, 6, 17, 3]  # tokens per document, at most L + 1


def _documents(vocab, seed=0):
  """Random documents and their boundaries; the packed rows of one whole epoch."""
  rng = np.random.default_rng(seed)
  offsets = np.concatenate([[0], np.cumsum(SIZES)]).astype(np.int64)
  tokens = rng.integers(0, vocab, offsets[-1]).astype(np.int32)
  L = 16
  rows = packing.epoch_plan(packing.chunks_for(tokens, offsets, L), 0, 0).num_rows
  batch = packing.packed_train_batch(tokens, offsets, 0, batch_size=rows, seq_len=L, seed=0)
  # The same plan over the stream of indices: where each packed target came from.
  where = packing.packed_train_batch(np.arange(len(tokens)), offsets, 0, batch_size=rows,
                                     seq_len=L, seed=0)['targets']
  return tokens, offsets, batch, where


def _model(name):
  cfg = tiny_config(**MODELS[name]).model
  model = GPT(cfg)
  params = model.init(jax.random.PRNGKey(1), jnp.zeros((1, 16), jnp.int32))['params']
  return model, params


@functools.lru_cache(maxsize=None)
def _alone_fns(name):
  model, _ = _model(name)
  logits = jax.jit(lambda p, t: model.apply({'params': p}, t[None, :-1])[0])
  nll_sum = lambda p, t: jnp.sum(lm.token_cross_entropy(  # noqa: E731
      model.apply({'params': p}, t[None, :-1]), t[None, 1:]))
  return logits, jax.jit(jax.value_and_grad(nll_sum))


@pytest.mark.parametrize('name', MODELS)
def test_packed_loss_and_grads_equal_each_document_alone(name):
  model, params = _model(name)
  tokens, offsets, batch, _ = _documents(model.cfg.vocab_size)
  packed = lambda p: lm.next_token_loss(model, p, batch, None, False)[0]  # noqa: E731
  loss, grads = jax.jit(jax.value_and_grad(packed))(params)

  _, nll_and_grad = _alone_fns(name)
  total, total_grads, count = 0.0, jax.tree.map(jnp.zeros_like, params), 0
  for a, b in zip(offsets[:-1], offsets[1:]):  # one document per call, unpadded
    nll, g = nll_and_grad(params, jnp.asarray(tokens[a:b]))
    total, count = total + float(nll), count + (b - a - 1)
    total_grads = jax.tree.map(jnp.add, total_grads, g)
  assert count == batch['weights'].sum()
  np.testing.assert_allclose(float(loss), total / count, rtol=RTOL)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y / count, rtol=RTOL, atol=ATOL),
               grads, total_grads)


@pytest.mark.parametrize('name', MODELS)
def test_logits_inside_a_packed_row_are_the_documents_own(name):
  model, params = _model(name)
  tokens, offsets, batch, where = _documents(model.cfg.vocab_size)
  logits_BLV = model.apply({'params': params}, batch['inputs'],
                           segment_ids_BL=batch['segment_ids'], positions_BL=batch['positions'])
  alone, _ = _alone_fns(name)
  seen = 0
  for row in range(len(where)):
    for s in np.unique(batch['segment_ids'][row][batch['segment_ids'][row] > 0]):
      cols = np.flatnonzero(batch['segment_ids'][row] == s)
      d = np.searchsorted(offsets, where[row, cols[0]], side='right') - 1
      doc = tokens[offsets[d]:offsets[d + 1]]
      np.testing.assert_allclose(logits_BLV[row, cols], alone(params, jnp.asarray(doc)),
                                 rtol=RTOL, atol=1e-5)
      seen += 1
  assert seen == len(SIZES)
  assert np.isfinite(np.asarray(logits_BLV)).all()  # padding too


def test_segment_mask_keeps_each_document_to_itself():
  mask = np.asarray(segment_mask(jnp.array([[1, 1, 2, 2, 2, 0, 0]])))[0]
  expected = np.zeros((7, 7), bool)
  expected[:2, :2] = np.tril(np.ones((2, 2), bool))
  expected[2:5, 2:5] = np.tril(np.ones((3, 3), bool))
  expected[5, 5] = expected[6, 6] = True  # padding sees itself only
  np.testing.assert_array_equal(mask, expected)


def test_a_row_of_padding_stays_finite_and_weightless():
  model, params = _model('llama-gqa')
  zeros = jnp.zeros((2, 16), jnp.int32)
  batch = {'inputs': zeros + 3, 'targets': zeros + 5, 'segment_ids': zeros,
           'positions': zeros, 'weights': jnp.zeros((2, 16), jnp.float32)}
  loss, grads = jax.jit(jax.value_and_grad(
      lambda p: lm.next_token_loss(model, p, batch, None, False)[0]))(params)
  assert float(loss) == 0.0
  assert all(np.isfinite(g).all() and not np.any(g) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize('name', MODELS)
def test_default_positions_and_one_segment_are_the_plain_model(name):
  model, params = _model(name)
  tokens = jax.random.randint(jax.random.key(0), (2, 16), 0, model.cfg.vocab_size)
  plain = model.apply({'params': params}, tokens)
  ones = jnp.ones((2, 16), jnp.int32)
  packed = model.apply({'params': params}, tokens, segment_ids_BL=ones,
                       positions_BL=jnp.cumsum(ones, axis=1) - 1)
  np.testing.assert_allclose(plain, packed, rtol=RTOL, atol=1e-5)
  weighted = {'inputs': tokens, 'targets': tokens, 'weights': jnp.ones((2, 16))}
  np.testing.assert_allclose(lm.eval_loss(model, params, weighted),
                             lm.eval_loss(model, params, {'inputs': tokens, 'targets': tokens}),
                             rtol=RTOL)


def test_decoding_with_a_cache_takes_no_segments():
  model, params = _model('gpt2')
  cache = init_cache(model.cfg, 1, 16)
  with pytest.raises(ValueError, match='decoding with a cache takes no segment ids'):
    model.apply({'params': params}, jnp.zeros((1, 4), jnp.int32), cache=cache,
                segment_ids_BL=jnp.ones((1, 4), jnp.int32))
