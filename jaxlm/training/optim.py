"""AdamW with warmup + cosine decay, clipping, and a weight-decay mask."""

from __future__ import annotations

import jax
import optax

from jaxlm.config import TrainConfig

# Parameters that get weight decay: the matmul kernels. Norms, biases and
# embeddings (wte, wpe) do not, as in GPT-2 / nanoGPT practice.
DECAYED = frozenset({'qkv', 'q', 'kv', 'out', 'gate', 'up', 'down', 'lm_head'})


def schedule(t: TrainConfig) -> optax.Schedule:
  """Linear warmup from 0 to learning_rate, then cosine to min_lr_ratio."""
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=t.learning_rate,
      warmup_steps=t.warmup_steps, decay_steps=t.steps,
      end_value=t.learning_rate * t.min_lr_ratio)


def decay_mask(params):
  """True for parameters that get weight decay (by name, not by rank:
  scanned layer norms are rank 2)."""
  def decays(path, _):
    return getattr(path[-1], 'key', None) in DECAYED
  return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(t: TrainConfig) -> optax.GradientTransformation:
  parts = []
  if t.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(t.grad_clip))
  parts.append(optax.adamw(schedule(t), b1=t.beta1, b2=t.beta2, eps=t.adam_eps,
                           weight_decay=t.weight_decay, mask=decay_mask))
  return optax.chain(*parts)
