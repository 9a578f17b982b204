"""Text from a trained model: autoregressive sampling by full recomputation.

A short, dependable sampler for the end-of-run sample; the window slides when
the text outgrows the model's context.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxlm.model import GPT


@functools.partial(jax.jit, static_argnames=('model',))
def _next_token(params, tokens_1L, length, rng, temperature, *, model: GPT):
  logits_1LV = model.apply({'params': params}, tokens_1L)
  logits_V = logits_1LV[0, length - 1].astype(jnp.float32)
  greedy = jnp.argmax(logits_V)
  sampled = jax.random.categorical(rng, logits_V / jnp.maximum(temperature, 1e-6))
  return jnp.where(temperature > 0, sampled, greedy)


def sample(params, model: GPT, prompt_ids: list[int], num_tokens: int, *,
           temperature: float = 0.8, seed: int = 0) -> list[int]:
  """Generates `num_tokens` ids after the prompt (temperature 0: greedy)."""
  if not prompt_ids:
    raise ValueError('the prompt is empty; give at least one token')
  window = model.cfg.max_len
  ids = list(prompt_ids)
  rng = jax.random.PRNGKey(seed)
  for i in range(num_tokens):
    context = ids[-window:]
    buffer = np.zeros((1, window), np.int32)
    buffer[0, :len(context)] = context
    token = _next_token(params, jnp.asarray(buffer), len(context),
                        jax.random.fold_in(rng, i), temperature, model=model)
    ids.append(int(token))
  return ids[len(prompt_ids):]
