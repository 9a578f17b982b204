"""Language modelling: the weighted loss of packed rows, and a packed run."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlm import tasks
from jaxlm.tasks import lm
from tests.configs import tiny_config


def _logits_and_targets(B=3, L=5, V=11):
  logits = jax.random.normal(jax.random.key(0), (B, L, V))
  targets = jax.random.randint(jax.random.key(1), (B, L), 0, V)
  return logits, targets


def test_cross_entropy_is_the_mean_token_nll():
  logits, targets = _logits_and_targets()
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  np.testing.assert_allclose(lm.token_cross_entropy(logits, targets), nll, rtol=1e-6)
  np.testing.assert_allclose(lm.cross_entropy(logits, targets), nll.mean(), rtol=1e-6)


def test_weighted_cross_entropy_averages_only_weighted_targets():
  logits, targets = _logits_and_targets()
  nll = lm.token_cross_entropy(logits, targets)
  weights = jnp.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], jnp.float32)
  np.testing.assert_allclose(lm.weighted_cross_entropy(logits, targets, weights),
                             nll[weights > 0].mean(), rtol=1e-6)
  np.testing.assert_allclose(lm.weighted_cross_entropy(logits, targets, jnp.ones((3, 5))),
                             lm.cross_entropy(logits, targets), rtol=1e-6)
  assert float(lm.weighted_cross_entropy(logits, targets, jnp.zeros((3, 5)))) == 0.0


def test_packed_eval_weighs_every_target_token_alike():
  # Two packed batches, one nearly empty: the eval loss is the mean over all their
  # target tokens, not the mean of the two batch means.
  from jaxlm.model.gpt import GPT
  cfg = tiny_config().model
  model = GPT(cfg)
  tokens = jax.random.randint(jax.random.key(0), (2, 2, 16), 0, cfg.vocab_size)
  params = model.init(jax.random.key(1), tokens[0])['params']
  weights = jnp.zeros((2, 2, 16)).at[0].set(1.0).at[1, 0, :3].set(1.0)  # 32 and 3 targets
  batches = [{'inputs': tokens[i], 'targets': tokens[i], 'weights': weights[i]}
             for i in range(2)]
  outputs = [lm.eval_loss_and_weight(model, params, b) for b in batches]
  nll = jnp.concatenate([lm.token_cross_entropy(model.apply({'params': params}, b['inputs']),
                                                b['targets'])[b['weights'] > 0]
                         for b in batches])
  np.testing.assert_allclose(lm.weighted_mean(outputs), float(nll.mean()), rtol=1e-6)
  assert [float(o[1]) for o in outputs] == [32.0, 3.0]
  assert abs(lm.weighted_mean(outputs) - np.mean([float(o[0]) for o in outputs])) > 1e-3
  plain = [lm.eval_loss_and_weight(model, params, {'inputs': t, 'targets': t}) for t in tokens]
  np.testing.assert_allclose(lm.weighted_mean(plain), np.mean([float(o[0]) for o in plain]),
                             rtol=1e-6)  # unpacked batches weigh alike: the plain mean


def test_a_packed_run_trains_on_whole_documents_from_the_prepared_dataset(tmp_path):
  """data.pack: rows of whole documents (their segments and positions) from the dataset's index."""
  from jaxlm.training import loop
  docs = [f'document {i}: ' + 'to be or not to be ' * (1 + i % 5) for i in range(120)]
  (tmp_path / 'docs.txt').write_text('\n'.join(docs) + '\n')
  c = tiny_config(data__source='files', data__train_files=str(tmp_path / 'docs.txt'),
                  data__file_format='lines', data__pack=True, data__seq_len=32,
                  model__max_len=32, train__steps=3, train__eval_every=3)
  task = tasks.for_config(c)
  resolved = task.prepare(str(tmp_path / 'run'), False)
  batch = task.train_batch(0, 0, 1)
  assert set(batch) == {'inputs', 'targets', 'segment_ids', 'positions', 'weights'}
  starts = batch['positions'] == 0  # each segment starts at position 0
  assert np.all(starts[batch['segment_ids'] > 0].sum() >= 1)
  assert 0 < batch['weights'].mean() < 1  # padding and the last target of a row are masked
  result = loop.run(resolved, str(tmp_path / 'run'))
  assert result['step'] == 3 and np.isfinite(result['eval_loss'])
