"""GPT decoder in Flax linen.

Dimension key used in names and einsum strings:
  B batch, L length (query), S length (key), D d_model, H heads, K head dim,
  F mlp hidden, V vocabulary, N layers.

Every parameter names its logical axes; `jaxlm/sharding.py` maps them to the
mesh. The blocks are stacked with `nn.scan` under a leading `layers` axis, so
a parameter of a block has shape [N, ...].
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxlm.config import ModelConfig, Remat
from jaxlm.sharding import constrain

_INIT = nn.initializers.normal(stddev=0.02)


def _param(module, name, init, shape, axes):
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, jnp.float32)


class LayerNorm(nn.Module):
  """LayerNorm with float32 statistics, optional bias (GPT-2 has one)."""
  use_bias: bool
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x_BLD):
    d = x_BLD.shape[-1]
    scale = _param(self, 'scale', nn.initializers.ones, (d,), ('norm',))
    x = x_BLD.astype(jnp.float32)
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + 1e-5) * scale[None, None]
    if self.use_bias:
      y = y + _param(self, 'bias', nn.initializers.zeros, (d,), ('norm',))[None, None]
    return y.astype(self.dtype)


class Attention(nn.Module):
  """Causal multi-head self-attention."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BLD, deterministic: bool):
    cfg, dt = self.cfg, jnp.dtype(self.cfg.dtype)
    D, H, K = cfg.d_model, cfg.num_heads, cfg.head_dim
    w_qkv = _param(self, 'qkv', _INIT, (3, D, H, K), (None, 'embed', 'heads', 'kv'))
    q_BLHK, k_BSHK, v_BSHK = jnp.einsum('BLD,CDHK->CBLHK', x_BLD, w_qkv.astype(dt))
    if cfg.use_bias:
      b_qkv = _param(self, 'qkv_bias', nn.initializers.zeros, (3, H, K), (None, 'heads', 'kv'))
      b_qkv = b_qkv.astype(dt)
      b_qkv = b_qkv[:, None, None]
      q_BLHK, k_BSHK, v_BSHK = q_BLHK + b_qkv[0], k_BSHK + b_qkv[1], v_BSHK + b_qkv[2]
    q_BLHK = constrain(q_BLHK, ('batch', 'length', 'act_heads', None))

    logits_BHLS = jnp.einsum('BLHK,BSHK->BHLS', q_BLHK, k_BSHK).astype(jnp.float32)
    logits_BHLS = logits_BHLS * K ** -0.5
    L = x_BLD.shape[1]
    causal_LS = jnp.tril(jnp.ones((L, L), dtype=bool))
    logits_BHLS = jnp.where(causal_LS[None, None], logits_BHLS, jnp.finfo(jnp.float32).min)
    probs_BHLS = jax.nn.softmax(logits_BHLS, axis=-1).astype(dt)
    probs_BHLS = nn.Dropout(cfg.dropout)(probs_BHLS, deterministic=deterministic)
    out_BLHK = jnp.einsum('BHLS,BSHK->BLHK', probs_BHLS, v_BSHK)

    w_out = _param(self, 'out', _out_init(cfg), (H, K, D), ('heads', 'kv', 'embed'))
    y_BLD = jnp.einsum('BLHK,HKD->BLD', out_BLHK, w_out.astype(dt))
    if cfg.use_bias:
      y_BLD = y_BLD + _param(self, 'out_bias', nn.initializers.zeros, (D,), ('norm',)).astype(dt)[None, None]
    return y_BLD


class Mlp(nn.Module):
  """Two-layer GELU MLP."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BLD):
    cfg, dt = self.cfg, jnp.dtype(self.cfg.dtype)
    D, F = cfg.d_model, cfg.d_ff
    w_up = _param(self, 'up', _INIT, (D, F), ('embed', 'mlp'))
    h_BLF = jnp.einsum('BLD,DF->BLF', x_BLD, w_up.astype(dt))
    if cfg.use_bias:
      h_BLF = h_BLF + _param(self, 'up_bias', nn.initializers.zeros, (F,), ('mlp',)).astype(dt)[None, None]
    h_BLF = constrain(nn.gelu(h_BLF), ('batch', 'length', 'act_mlp'))
    w_down = _param(self, 'down', _out_init(cfg), (F, D), ('mlp', 'embed'))
    y_BLD = jnp.einsum('BLF,FD->BLD', h_BLF, w_down.astype(dt))
    if cfg.use_bias:
      y_BLD = y_BLD + _param(self, 'down_bias', nn.initializers.zeros, (D,), ('norm',)).astype(dt)[None, None]
    return y_BLD


def _out_init(cfg: ModelConfig):
  # GPT-2: residual projections scaled by 1/sqrt(2 * num_layers).
  return nn.initializers.normal(stddev=0.02 / (2 * cfg.num_layers) ** 0.5)


class Block(nn.Module):
  """Pre-LayerNorm transformer block; scan-compatible (carry, None) -> (carry, None)."""
  cfg: ModelConfig
  deterministic: bool

  @nn.compact
  def __call__(self, x_BLD, _):
    cfg, dt = self.cfg, jnp.dtype(self.cfg.dtype)
    drop = nn.Dropout(cfg.dropout)
    h = LayerNorm(cfg.use_bias, dt, name='ln_attn')(x_BLD)
    x_BLD = x_BLD + drop(Attention(cfg, name='attn')(h, self.deterministic),
                         deterministic=self.deterministic)
    h = LayerNorm(cfg.use_bias, dt, name='ln_mlp')(x_BLD)
    x_BLD = x_BLD + drop(Mlp(cfg, name='mlp')(h), deterministic=self.deterministic)
    return constrain(x_BLD, ('batch', 'length', 'act_embed')), None


def scanned_block(cfg: ModelConfig):
  """Block under nn.scan (and nn.remat if cfg.remat says): params get a leading axis."""
  block = Block
  if cfg.remat is not Remat.NONE:
    policy = {Remat.FULL: jax.checkpoint_policies.nothing_saveable,
              Remat.MATMULS: jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
              }[cfg.remat]
    block = nn.remat(Block, policy=policy, prevent_cse=False)
  return nn.scan(
      block,
      variable_axes={'params': 0},
      split_rngs={'params': True, 'dropout': True},
      length=cfg.num_layers,
      metadata_params={nn.PARTITION_NAME: 'layers'},
  )


class Blocks(nn.Module):
  """The N blocks, scanned: parameters carry a leading `layers` axis."""
  cfg: ModelConfig
  deterministic: bool

  @nn.compact
  def __call__(self, x_BLD):
    x_BLD, _ = scanned_block(self.cfg)(self.cfg, self.deterministic, name='blocks')(x_BLD, None)
    return x_BLD


class GPT(nn.Module):
  """Token + position embeddings, scanned blocks, final norm, logits over V.

  `stack` builds the module that runs the blocks: `Blocks`, or a drop-in with
  the same parameters such as the pipeline in jaxlm/pipeline.py. The model
  itself knows nothing of pipeline stages.
  """
  cfg: ModelConfig
  stack: Callable[..., nn.Module] = Blocks

  @nn.compact
  def __call__(self, tokens_BL, deterministic: bool = True, return_hidden: bool = False):
    """Logits [B, L, V]; with return_hidden, the final-norm hidden states [B, L, D]."""
    cfg, dt = self.cfg, jnp.dtype(self.cfg.dtype)
    V, D = cfg.vocab_size, cfg.d_model
    L = tokens_BL.shape[1]
    wte = _param(self, 'wte', _INIT, (V, D), ('vocab', 'embed'))
    wpe = _param(self, 'wpe', _INIT, (cfg.max_len, D),
                 ('position', 'embed'))
    x_BLD = (jnp.take(wte, tokens_BL, axis=0) + wpe[None, :L]).astype(dt)
    x_BLD = constrain(x_BLD, ('batch', 'length', 'act_embed'))
    x_BLD = nn.Dropout(cfg.dropout)(x_BLD, deterministic=deterministic)
    x_BLD = self.stack(cfg, deterministic, name='stack')(x_BLD)
    x_BLD = LayerNorm(cfg.use_bias, dt, name='ln_final')(x_BLD)
    if return_hidden:
      return x_BLD
    if cfg.tie_embeddings:
      w_DV = wte.T
    else:
      w_DV = _param(self, 'lm_head', _INIT, (D, V), ('embed', 'vocab'))
    logits_BLV = jnp.einsum('BLD,DV->BLV', x_BLD, w_DV.astype(dt))
    return constrain(logits_BLV, ('batch', 'length', 'act_vocab'))


def count_params(params) -> int:
  """Number of scalars in a params tree (boxed or not)."""
  return sum(x.size for x in jax.tree.leaves(nn.meta.unbox(params)))
