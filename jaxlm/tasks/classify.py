"""A GPT body with a classification head, and its jitted steps.

Dimension key as in jaxlm/model/gpt.py, plus C classes.

Parameters are `{'gpt': <GPT params>, 'head': {'kernel', 'bias'}}`, so the
parameters of a jaxlm pretraining run drop in under 'gpt' (an untied
`lm_head` there is not used). Texts come right-padded with their lengths:
attention is causal, so the hidden states of the real tokens do not depend
on the pads after them, and pooling reads only real tokens.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from jax.sharding import Mesh

from jaxlm.parallel import sharding
from jaxlm.tasks.classify_config import Config, Pooling
from jaxlm.config import ConfigError, ModelConfig
from jaxlm.model.gpt import GPT
from jaxlm.training.optim import make_optimizer, schedule
from jaxlm.training.steps import TrainState

Batch = dict[str, jax.Array]  # tokens int32[B, L], lengths/labels int32[B], weights f32[B]


def pool(h_BLD, lengths_B, pooling: Pooling):
  """float32 [B, D]: the last real token's state, or the mean over real tokens."""
  h_BLD = h_BLD.astype(jnp.float32)
  L = h_BLD.shape[1]
  if pooling is Pooling.LAST:
    last_B = jnp.clip(lengths_B - 1, 0, L - 1)
    return jnp.take_along_axis(h_BLD, last_B[:, None, None], axis=1)[:, 0]
  mask_BL = jnp.arange(L)[None, :] < lengths_B[:, None]
  total_BD = jnp.einsum('BLD,BL->BD', h_BLD, mask_BL.astype(jnp.float32))
  return total_BD / jnp.maximum(lengths_B, 1)[:, None].astype(jnp.float32)


class Head(nn.Module):
  """Linear map from the pooled state to class logits."""
  num_classes: int

  @nn.compact
  def __call__(self, x_BD):
    D, C = x_BD.shape[-1], self.num_classes
    init = nn.initializers.normal(stddev=0.02)
    w_DC = self.param('kernel', nn.with_logical_partitioning(init, ('embed', None)),
                      (D, C), jnp.float32)
    b_C = self.param('bias', nn.with_logical_partitioning(nn.initializers.zeros, (None,)),
                     (C,), jnp.float32)
    return jnp.einsum('BD,DC->BC', x_BD, w_DC) + b_C[None]


class Classifier(nn.Module):
  """GPT final-norm hidden states -> pooling -> dropout -> linear head."""
  cfg: ModelConfig
  num_classes: int
  pooling: Pooling

  @nn.compact
  def __call__(self, tokens_BL, lengths_B, deterministic: bool = True):
    h_BLD = GPT(self.cfg, name='gpt')(tokens_BL, deterministic, return_hidden=True)
    x_BD = sharding.constrain(pool(h_BLD, lengths_B, self.pooling), ('batch', 'act_embed'))
    x_BD = nn.Dropout(self.cfg.dropout)(x_BD, deterministic=deterministic)
    return Head(self.num_classes, name='head')(x_BD)


def loss_fn(params, batch: Batch, rng, *, model: Classifier, train: bool):
  """(weighted mean cross-entropy over classes, logits [B, C])."""
  deterministic = not train or model.cfg.dropout == 0.0
  rngs = {} if deterministic else {'dropout': rng}
  logits_BC = model.apply({'params': params}, batch['tokens'], batch['lengths'],
                          deterministic=deterministic, rngs=rngs)
  losses_B = optax.softmax_cross_entropy_with_integer_labels(logits_BC, batch['labels'])
  weights_B = batch['weights']
  return jnp.sum(losses_B * weights_B) / jnp.maximum(jnp.sum(weights_B), 1.0), logits_BC


def train_step(state: TrainState, batch: Batch, *, model: Classifier,
               tx: optax.GradientTransformation, lr_schedule, grad_shardings=None):
  """One optimizer step: (state, batch) -> (state, metrics)."""
  rng = jax.random.fold_in(state.rng, state.step)
  grad_fn = jax.value_and_grad(functools.partial(loss_fn, model=model, train=True),
                               has_aux=True)
  (loss, logits_BC), grads = grad_fn(state.params, batch, rng)
  if grad_shardings is not None:  # ZeRO-2: reduce-scatter instead of all-reduce
    grads = jax.lax.with_sharding_constraint(grads, grad_shardings)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  correct_B = (jnp.argmax(logits_BC, -1) == batch['labels']).astype(jnp.float32)
  metrics = {
      'loss': loss,
      'accuracy': jnp.sum(correct_B * batch['weights']) / jnp.sum(batch['weights']),
      'grad_norm': optax.tree.norm(grads),
      'learning_rate': lr_schedule(state.step),
  }
  return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                       opt_state=opt_state), metrics


def predict_step(params, batch: Batch, *, model: Classifier) -> jax.Array:
  """Predicted class ids int32[B]."""
  _, logits_BC = loss_fn(params, batch, None, model=model, train=False)
  return jnp.argmax(logits_BC, -1).astype(jnp.int32)


def _dummy_inputs(max_length: int):
  return jnp.zeros((1, max_length), jnp.int32), jnp.ones((1,), jnp.int32)


def init_state(seed: int, gpt_params=None, *, model: Classifier, tx, max_length: int
               ) -> TrainState:
  """A fresh state; with gpt_params, those replace the random body (same head either way)."""
  init_rng, train_rng = jax.random.split(jax.random.PRNGKey(seed))
  params = nn.meta.unbox(model.init({'params': init_rng}, *_dummy_inputs(max_length))['params'])
  if gpt_params is not None:
    params = {**params, 'gpt': gpt_params}
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=tx.init(params), rng=train_rng)


def abstract_params(model: Classifier, max_length: int):
  """Parameter shapes, still boxed with their logical axis names."""
  inputs = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in _dummy_inputs(max_length)]
  return jax.eval_shape(lambda t, n: model.init(jax.random.PRNGKey(0), t, n),
                        *inputs)['params']


@dataclasses.dataclass(frozen=True)
class Steps:
  """The model, optimizer and jitted steps for one config on one mesh."""
  model: Classifier
  tx: optax.GradientTransformation
  mesh: Mesh
  state_shardings: TrainState
  abstract_state: TrainState  # ShapeDtypeStructs carrying the shardings
  init: Callable[..., TrainState]  # init() random, init(gpt_params) pretrained body
  train: Callable[[TrainState, Batch], tuple[TrainState, dict]]
  predict: Callable[[Any, Batch], jax.Array]


def check_layout(c: Config, mesh: Mesh) -> None:
  """Checks that the batch and the model split evenly over the mesh."""
  data, model = mesh.shape['data'], mesh.shape['model']
  if c.data.batch_size % (data * jax.process_count()):
    raise ConfigError(
        f'data.batch_size={c.data.batch_size} is not divisible by the data axis ({data})'
        f' x {jax.process_count()} processes; use a multiple of {data * jax.process_count()}')
  for name, size in (('model.num_heads', c.model.num_heads), ('model.d_ff', c.model.d_ff),
                     ('model.vocab_size', c.model.vocab_size)):
    if size % model:
      raise ConfigError(f'{name}={size} is not divisible by parallel.model={model};'
                        ' pick a model axis size that divides it')
  if c.parallel.zero_stage and c.model.d_model % data:
    raise ConfigError(
        f'parallel.zero_stage={c.parallel.zero_stage} shards model.d_model={c.model.d_model}'
        f' over the data axis ({data}), which does not divide it; use zero_stage=0')


def build(c: Config, mesh: Mesh) -> Steps:
  """Builds the classifier and jits init/train/predict with explicit shardings."""
  check_layout(c, mesh)
  model = Classifier(c.model, c.num_classes, c.classifier.pooling)
  tx = make_optimizer(c.train)  # reads the optimizer fields jaxlm.config.TrainConfig names
  max_length = c.data.max_length
  boxed = abstract_params(model, max_length)
  zero = c.parallel.zero_stage
  by_kind = {kind: sharding.mesh_shardings(boxed, mesh, sharding.rules_for(kind, zero))
             for kind in ('params', 'grads', 'opt_state')}
  rep, batch_sh = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  abstract_opt = jax.eval_shape(tx.init, sharding.unbox_shapes(boxed))
  opt_sh = optax.tree_map_params(tx, lambda _, s: s, abstract_opt, by_kind['opt_state'],
                                 transform_non_params=lambda _: rep)
  shardings = TrainState(step=rep, params=by_kind['params'], opt_state=opt_sh, rng=rep)

  init_fn = functools.partial(init_state, c.train.seed, model=model, tx=tx,
                              max_length=max_length)
  scratch = jax.jit(lambda: init_fn(None), out_shardings=shardings)
  pretrained = jax.jit(init_fn, in_shardings=(shardings.params['gpt'],),
                       out_shardings=shardings)
  init = lambda gpt_params=None: scratch() if gpt_params is None else pretrained(gpt_params)
  abstract = jax.eval_shape(scratch)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, shardings)
  train = jax.jit(functools.partial(train_step, model=model, tx=tx,
                                    lr_schedule=schedule(c.train),
                                    grad_shardings=by_kind['grads'] if zero >= 2 else None),
                  in_shardings=(shardings, batch_sh), out_shardings=(shardings, rep),
                  donate_argnums=0)
  predict = jax.jit(functools.partial(predict_step, model=model),
                    in_shardings=(shardings.params, batch_sh), out_shardings=rep)
  return Steps(model, tx, mesh, shardings, abstract, init, train, predict)
