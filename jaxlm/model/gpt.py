"""The decoder in Flax linen: GPT-2 and the Llama family are options of one model.

Dimension key used in names and einsum strings:
  B batch, L length (query), S length (key), D d_model, H heads, K head dim,
  G key/value heads, R query heads per key/value head (H = G·R), C q/k/v,
  F mlp hidden, V vocabulary, N layers.

The options (jaxlm/config.py ModelConfig; the defaults are GPT-2's):
  norm       layernorm (GPT-2) | rmsnorm (Llama), with norm_eps
  positions  learned (a table added to the tokens) | rope (queries and keys
             rotated, HF's half-split convention; rope_theta, Llama 3.1 scaling)
  mlp        gelu (up, tanh-GELU, down) | swiglu (down(silu(gate) * up))
  num_kv_heads  fewer key/value heads than query heads: grouped-query attention
  use_bias   every projection and norm; qkv_bias: q, k, v only (Qwen2)

Every parameter names its logical axes; `jaxlm/parallel/sharding.py` maps them to the
mesh. The blocks are stacked with `nn.scan` under a leading `layers` axis, so
a parameter of a block has shape [N, ...].

Packed rows (jaxlm/data/packing.py): `GPT(cfg).apply(params, tokens_BL,
segment_ids_BL=..., positions_BL=...)` runs several documents in one row.
Query l sees key s only if s <= l and both carry the same segment id, so
attention never crosses a document boundary; segment 0 is padding, whose
positions see only themselves (their outputs are the loss's to ignore). The
positions (each document's from 0) feed RoPE and the learned table. Without
them, positions are 0..L-1 and attention is causal over the whole row, as
before.

Decoding (jaxlm/inference/generate.py) passes a key/value cache through the same
scanned blocks: `init_cache` makes one with a leading layers axis, and
`GPT(cfg).apply(params, tokens_BL, cache=cache)` writes the L new tokens at
each row's `index`, attends to everything cached before them, and returns
(logits, cache). A prefill is one such call on the prompt; a decode step one
on a single token.

Matmul weights are used only through `.astype(dtype)` (and `.T`, and
`_lookup` for the embedding), so a quantized stand-in with those methods
(jaxlm/inference/quantize.py) runs through the same code, dequantized per layer.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jaxlm.config import MlpKind, ModelConfig, NormKind, PositionKind, Remat
from jaxlm.parallel.sharding import constrain

_INIT = nn.initializers.normal(stddev=0.02)

# The cache per layer is {'k', 'v': [B, S, G, K], 'index': [B]}: S slots,
# slots before `index` filled, G = num_kv_heads. Stacked: a leading N axis on each.
Cache = dict
CACHE_AXES = {'k': ('layers', 'batch', 'length', 'act_kv_heads', None),
              'v': ('layers', 'batch', 'length', 'act_kv_heads', None),
              'index': ('layers', 'batch')}


def _param(module, name, init, shape, axes):
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, jnp.float32)


class Norm(nn.Module):
  """LayerNorm or RMSNorm (cfg.norm) with float32 statistics; a bias with use_bias."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BLD):
    cfg, d = self.cfg, x_BLD.shape[-1]
    scale = _param(self, 'scale', nn.initializers.ones, (d,), ('norm',))
    x = x_BLD.astype(jnp.float32)
    if cfg.norm is NormKind.RMSNORM:
      y = x * jax.lax.rsqrt(jnp.square(x).mean(-1, keepdims=True) + cfg.norm_eps)
    else:
      x = x - x.mean(-1, keepdims=True)
      y = x * jax.lax.rsqrt(jnp.square(x).mean(-1, keepdims=True) + cfg.norm_eps)
    y = y * scale[None, None]
    if cfg.use_bias:
      y = y + _param(self, 'bias', nn.initializers.zeros, (d,), ('norm',))[None, None]
    return y.astype(cfg.dtype)


class Attention(nn.Module):
  """Causal multi-head self-attention; with a layer's cache, extends it: (y, cache).

  With segment ids, attention stays within each segment (`segment_mask`);
  positions (RoPE) default to 0..L-1, or index.. with a cache.
  """
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BLD, deterministic: bool, cache: Optional[Cache] = None,
               segment_ids_BL=None, positions_BL=None):
    cfg, dt = self.cfg, jnp.dtype(self.cfg.dtype)
    H, G, K = cfg.num_heads, cfg.kv_heads, cfg.head_dim
    if cache is not None and (segment_ids_BL is not None or positions_BL is not None):
      raise ValueError('decoding with a cache takes no segment ids or positions')
    q_BLHK, k_BSGK, v_BSGK = self._qkv(x_BLD)
    q_BLHK = constrain(q_BLHK, ('batch', 'length', 'act_heads', None))

    B, L = x_BLD.shape[:2]
    start_B = jnp.zeros((B,), jnp.int32) if cache is None else cache['index']
    if cfg.positions is PositionKind.ROPE:
      if positions_BL is None:
        positions_BL = start_B[:, None] + jnp.arange(L)[None]
      q_BLHK, k_BSGK = (rope(x, positions_BL, cfg) for x in (q_BLHK, k_BSGK))
    if (cache is None and segment_ids_BL is None
        and _fused_attention(cfg, L, deterministic)):
      out_BLHK = jax.nn.dot_product_attention(
          q_BLHK, k_BSGK, v_BSGK, is_causal=True, scale=K ** -0.5, implementation='cudnn')
      return self._project(out_BLHK), cache
    if segment_ids_BL is not None:
      visible_111LS = segment_mask(segment_ids_BL)[:, None, None]  # [B,1,1,L,S]
    elif cache is None:
      visible_111LS = jnp.tril(jnp.ones((L, L), dtype=bool))[None, None, None]
    else:  # the keys are the cache's S slots, the new ones written in
      cache = _extend(cache, k_BSGK, v_BSGK)
      k_BSGK, v_BSGK = cache['k'], cache['v']
      visible_111LS = _cache_mask(start_B, L, k_BSGK.shape[1])[:, None, None]  # [B,1,1,L,S]

    # Each of the G key/value heads serves R = H / G query heads (R = 1: multi-head).
    q_BLGRK = q_BLHK.reshape(B, L, G, H // G, K)
    logits_BGRLS = jnp.einsum('BLGRK,BSGK->BGRLS', q_BLGRK, k_BSGK).astype(jnp.float32)
    logits_BGRLS = logits_BGRLS * K ** -0.5
    logits_BGRLS = jnp.where(visible_111LS, logits_BGRLS, jnp.finfo(jnp.float32).min)
    probs_BGRLS = jax.nn.softmax(logits_BGRLS, axis=-1).astype(dt)
    probs_BGRLS = nn.Dropout(cfg.dropout)(probs_BGRLS, deterministic=deterministic)
    out_BLHK = jnp.einsum('BGRLS,BSGK->BLGRK', probs_BGRLS, v_BSGK).reshape(B, L, H, K)
    return self._project(out_BLHK), cache

  def _qkv(self, x_BLD):
    """q [B, L, H, K], k and v [B, L, G, K]."""
    cfg, dt = self.cfg, jnp.dtype(self.cfg.dtype)
    D, H, G, K = cfg.d_model, cfg.num_heads, cfg.kv_heads, cfg.head_dim
    bias = cfg.use_bias or cfg.qkv_bias
    if G == H:
      w_qkv = _param(self, 'qkv', _INIT, (3, D, H, K), (None, 'embed', 'heads', 'kv'))
      # One [B·L, D] x [D, 3·H·K] matmul; q, k, v are slices of its output. (With
      # C leading the output, XLA transposes activations forward and backward.)
      qkv_BLCHK = jnp.einsum('BLD,CDHK->BLCHK', x_BLD, w_qkv.astype(dt))
      if bias:
        b_qkv = _param(self, 'qkv_bias', nn.initializers.zeros, (3, H, K),
                       (None, 'heads', 'kv'))
        qkv_BLCHK = qkv_BLCHK + b_qkv.astype(dt)[None, None]
      return tuple(qkv_BLCHK[:, :, i] for i in range(3))
    # Grouped-query: q and the G-head k/v pair are separate weights.
    w_q = _param(self, 'q', _INIT, (D, H, K), ('embed', 'heads', 'kv'))
    w_kv = _param(self, 'kv', _INIT, (2, D, G, K), (None, 'embed', 'kv_heads', 'kv'))
    q_BLHK = jnp.einsum('BLD,DHK->BLHK', x_BLD, w_q.astype(dt))
    kv_BLCGK = jnp.einsum('BLD,CDGK->BLCGK', x_BLD, w_kv.astype(dt))
    if bias:
      b_q = _param(self, 'q_bias', nn.initializers.zeros, (H, K), ('heads', 'kv'))
      b_kv = _param(self, 'kv_bias', nn.initializers.zeros, (2, G, K),
                    (None, 'kv_heads', 'kv'))
      q_BLHK = q_BLHK + b_q.astype(dt)[None, None]
      kv_BLCGK = kv_BLCGK + b_kv.astype(dt)[None, None]
    return q_BLHK, kv_BLCGK[:, :, 0], kv_BLCGK[:, :, 1]

  def _project(self, out_BLHK):
    cfg, dt = self.cfg, jnp.dtype(self.cfg.dtype)
    H, K, D = cfg.num_heads, cfg.head_dim, cfg.d_model
    w_out = _param(self, 'out', _out_init(cfg), (H, K, D), ('heads', 'kv', 'embed'))
    y_BLD = jnp.einsum('BLHK,HKD->BLD', out_BLHK, w_out.astype(dt))
    if cfg.use_bias:
      bias = _param(self, 'out_bias', nn.initializers.zeros, (D,), ('norm',))
      y_BLD = y_BLD + bias.astype(dt)[None, None]
    return y_BLD


def rope_frequencies(cfg: ModelConfig) -> np.ndarray:
  """[K/2] float32 inverse frequencies: theta^(-2i/K), with Llama 3.1 scaling if set.

  The same arithmetic as transformers' `rope_type` default and llama3.
  """
  K = cfg.head_dim
  inv_freq = 1.0 / (cfg.rope_theta ** (np.arange(0, K, 2, dtype=np.float32) / K))
  inv_freq = inv_freq.astype(np.float32)
  if not cfg.rope_scaling:
    return inv_freq
  factor, old_len = cfg.rope_scaling, cfg.rope_original_max_len
  low, high = cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
  wavelen = 2 * np.pi / inv_freq
  scaled = np.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
  smooth = (old_len / wavelen - low) / (high - low)
  smoothed = (1 - smooth) * scaled / factor + smooth * scaled
  medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
  return np.where(medium, smoothed, scaled).astype(np.float32)


def rope(x_BLHK, positions_BL, cfg: ModelConfig):
  """Rotary position embedding of queries or keys, HF's half-split convention.

  Dimension i of the first half pairs with dimension i of the second half;
  the pair turns by position x frequency i. In float32, cast back.
  """
  angles_BLk = positions_BL[..., None].astype(jnp.float32) * rope_frequencies(cfg)[None, None]
  cos_BL1k, sin_BL1k = jnp.cos(angles_BLk)[:, :, None], jnp.sin(angles_BLk)[:, :, None]
  x = x_BLHK.astype(jnp.float32)
  x1, x2 = jnp.split(x, 2, axis=-1)
  y = jnp.concatenate([x1 * cos_BL1k - x2 * sin_BL1k, x2 * cos_BL1k + x1 * sin_BL1k], -1)
  return y.astype(x_BLHK.dtype)


def segment_mask(segment_ids_BL):
  """[B, L, S] bool: query l sees key s <= l of its own segment; padding (0) itself only.

  A padding position keeps one visible key so that its softmax stays finite.
  """
  L = segment_ids_BL.shape[1]
  causal_1LS = jnp.tril(jnp.ones((L, L), dtype=bool))[None]
  same_BLS = segment_ids_BL[:, :, None] == segment_ids_BL[:, None, :]
  real_BL1 = (segment_ids_BL > 0)[:, :, None]
  return causal_1LS & same_BLS & (real_BL1 | jnp.eye(L, dtype=bool)[None])


def _fused_attention(cfg: ModelConfig, length: int, deterministic: bool) -> bool:
  """Whether training attention runs cuDNN's fused kernel (jax.nn.dot_product_attention).

  model.attention='auto' asks for it (xla: always the einsums). It needs a
  GPU, bf16/fp16 compute, head_dim a multiple of 8 up to 128, an even length,
  and no attention dropout (the kernel has none here). Decoding with a cache
  always uses the einsums.

  Packed rows (segment ids) always use the einsums with `segment_mask`, on
  GPU too: in jax 0.10.2, jax.nn.dot_product_attention takes segments only
  as a dense `mask`, which its cuDNN path turns into an additive [B, 1, L, L]
  bias whose gradient it also computes (the memory a fused kernel exists to
  avoid), and cuDNN's packed-segment layout (q_offsets/kv_offsets) is
  reachable only through jax's private jax._src.cudnn module.
  """
  return (cfg.attention == 'auto' and jax.default_backend() == 'gpu'
          and cfg.dtype in ('bfloat16', 'float16')
          and cfg.head_dim % 8 == 0 and cfg.head_dim <= 128 and length % 2 == 0
          and (deterministic or cfg.dropout == 0))


def _extend(cache: Cache, k_BLGK, v_BLGK) -> Cache:
  """Writes L new keys/values at slots index..index+L-1 of each row (in place).

  The slots must exist (index + L <= S); past the end, the write would land
  L slots early, so the caller never asks for that (jaxlm/inference/generate.py).
  """
  index_B = cache['index']

  def write(old_BSGK, new_BLGK):
    new_BLGK = new_BLGK.astype(old_BSGK.dtype)
    at = lambda old_SGK, new_LGK, i: jax.lax.dynamic_update_slice(old_SGK, new_LGK, (i, 0, 0))
    return constrain(jax.vmap(at)(old_BSGK, new_BLGK, index_B), CACHE_AXES['k'][1:])

  L = k_BLGK.shape[1]
  return {'k': write(cache['k'], k_BLGK), 'v': write(cache['v'], v_BLGK),
          'index': constrain(index_B + L, CACHE_AXES['index'][1:])}


def _cache_mask(start_B, L: int, S: int):
  """[B, L, S]: query l (at position start + l) sees slots s <= start + l."""
  query_BL1 = (start_B[:, None] + jnp.arange(L)[None])[:, :, None]
  return jnp.arange(S)[None, None] <= query_BL1


class Mlp(nn.Module):
  """The MLP: up, tanh-GELU, down (gelu); or down(silu(gate) * up) (swiglu)."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BLD):
    cfg, dt = self.cfg, jnp.dtype(self.cfg.dtype)
    D, F = cfg.d_model, cfg.d_ff

    def project(name):
      w = _param(self, name, _INIT, (D, F), ('embed', 'mlp'))
      h_BLF = jnp.einsum('BLD,DF->BLF', x_BLD, w.astype(dt))
      if cfg.use_bias:
        bias = _param(self, f'{name}_bias', nn.initializers.zeros, (F,), ('mlp',))
        h_BLF = h_BLF + bias.astype(dt)[None, None]
      return h_BLF

    if cfg.mlp is MlpKind.SWIGLU:
      h_BLF = nn.silu(project('gate')) * project('up')
    else:
      h_BLF = nn.gelu(project('up'))
    h_BLF = constrain(h_BLF, ('batch', 'length', 'act_mlp'))
    w_down = _param(self, 'down', _out_init(cfg), (F, D), ('mlp', 'embed'))
    y_BLD = jnp.einsum('BLF,FD->BLD', h_BLF, w_down.astype(dt))
    if cfg.use_bias:
      bias = _param(self, 'down_bias', nn.initializers.zeros, (D,), ('norm',))
      y_BLD = y_BLD + bias.astype(dt)[None, None]
    return y_BLD


def _out_init(cfg: ModelConfig):
  # GPT-2: residual projections scaled by 1/sqrt(2 * num_layers).
  return nn.initializers.normal(stddev=0.02 / (2 * cfg.num_layers) ** 0.5)


class Block(nn.Module):
  """Pre-norm transformer block; scan-compatible (x, cache) -> (x, cache).

  Training passes cache=None and gets None back; decoding passes this layer's
  slice of the cache and gets it extended. Segment ids and positions (packed
  rows, or None) are the same for every layer.
  """
  cfg: ModelConfig
  deterministic: bool

  @nn.compact
  def __call__(self, x_BLD, cache: Optional[Cache], segment_ids_BL=None, positions_BL=None):
    cfg = self.cfg
    drop = nn.Dropout(cfg.dropout)
    h = Norm(cfg, name='ln_attn')(x_BLD)
    a_BLD, cache = Attention(cfg, name='attn')(h, self.deterministic, cache,
                                               segment_ids_BL, positions_BL)
    x_BLD = x_BLD + drop(a_BLD, deterministic=self.deterministic)
    h = Norm(cfg, name='ln_mlp')(x_BLD)
    x_BLD = x_BLD + drop(Mlp(cfg, name='mlp')(h), deterministic=self.deterministic)
    return constrain(x_BLD, ('batch', 'length', 'act_embed')), cache


def scanned_block(cfg: ModelConfig):
  """Block under nn.scan (and nn.remat if cfg.remat says): params get a leading axis.

  Call it as (x, cache, segment_ids, positions): the cache is scanned over
  layers, segment ids and positions are broadcast to every layer.
  """
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
      in_axes=(0, nn.broadcast, nn.broadcast),
      length=cfg.num_layers,
      unroll=cfg.scan_unroll,
      metadata_params={nn.PARTITION_NAME: 'layers'},
  )


class Blocks(nn.Module):
  """The N blocks, scanned: parameters carry a leading `layers` axis."""
  cfg: ModelConfig
  deterministic: bool

  @nn.compact
  def __call__(self, x_BLD, cache: Optional[Cache] = None, segment_ids_BL=None,
               positions_BL=None):
    """x [B, L, D]; with a stacked cache ([N, ...] leaves), (x, extended cache)."""
    x_BLD, cache = scanned_block(self.cfg)(self.cfg, self.deterministic, name='blocks')(
        x_BLD, cache, segment_ids_BL, positions_BL)
    return x_BLD if cache is None else (x_BLD, cache)


class GPT(nn.Module):
  """Token (+ learned position) embeddings, scanned blocks, final norm, logits over V.

  `stack` builds the module that runs the blocks: `Blocks`, or a drop-in with
  the same parameters such as the pipeline in jaxlm/parallel/pipeline.py. The model
  itself knows nothing of pipeline stages.
  """
  cfg: ModelConfig
  stack: Callable[..., nn.Module] = Blocks

  @nn.compact
  def __call__(self, tokens_BL, deterministic: bool = True, return_hidden: bool = False,
               cache: Optional[Cache] = None, *, segment_ids_BL=None, positions_BL=None):
    """Logits [B, L, V]; with return_hidden, the final-norm hidden states [B, L, D].

    With a cache (`init_cache`), the tokens sit at positions index..index+L-1
    of each row and the result is (logits or hidden, extended cache).
    Packed rows pass int32 segment_ids_BL (1.. per document, 0 padding) and
    positions_BL (each document's from 0); either alone is allowed.
    """
    cfg, dt = self.cfg, jnp.dtype(self.cfg.dtype)
    V, D = cfg.vocab_size, cfg.d_model
    L = tokens_BL.shape[1]
    wte = _param(self, 'wte', _INIT, (V, D), ('vocab', 'embed'))
    if cache is not None and self.stack is not Blocks:
      raise ValueError('decoding with a cache runs the default Blocks; build GPT(cfg)'
                       ' without stack= and give it canonical-order parameters')
    if cache is not None and (segment_ids_BL is not None or positions_BL is not None):
      raise ValueError('decoding with a cache takes no segment ids or positions')
    x_BLD = _lookup(wte, tokens_BL)
    if cfg.positions is PositionKind.LEARNED:
      wpe = _param(self, 'wpe', _INIT, (cfg.max_len, D), ('position', 'embed'))
      if positions_BL is not None:
        x_BLD = x_BLD + jnp.take(wpe, positions_BL, axis=0)
      elif cache is None:
        x_BLD = x_BLD + wpe[None, :L]
      else:
        positions_BL = cache['index'][0][:, None] + jnp.arange(L)[None]
        x_BLD = x_BLD + jnp.take(wpe, positions_BL, axis=0, mode='clip')
    x_BLD = x_BLD.astype(dt)
    x_BLD = constrain(x_BLD, ('batch', 'length', 'act_embed'))
    x_BLD = nn.Dropout(cfg.dropout)(x_BLD, deterministic=deterministic)
    packed = {name: constrain(x, ('batch', 'length')) for name, x in
              (('segment_ids_BL', segment_ids_BL), ('positions_BL', positions_BL))
              if x is not None}
    if cache is None:
      x_BLD = self.stack(cfg, deterministic, name='stack')(x_BLD, **packed)
    else:
      x_BLD, cache = self.stack(cfg, deterministic, name='stack')(x_BLD, cache)
      cache = {k: constrain(v, CACHE_AXES[k]) for k, v in cache.items()}
    x_BLD = Norm(cfg, name='ln_final')(x_BLD)
    if return_hidden:
      return x_BLD if cache is None else (x_BLD, cache)
    if cfg.tie_embeddings:
      w_DV = wte.T
    else:
      w_DV = _param(self, 'lm_head', _INIT, (D, V), ('embed', 'vocab'))
    logits_BLV = _logits(x_BLD, w_DV, dt, cfg.real_vocab)
    return logits_BLV if cache is None else (logits_BLV, cache)

  def head(self, x_BLD):
    """The output layer alone: logits [B, L, V] of final-norm hidden states.

    `model.apply(variables, x, method=GPT.head)`: decoding takes the logits of
    a prompt's last position only, not of all of them.
    """
    params = nn.meta.unbox(self.variables['params'])
    w_DV = params['wte'].T if self.cfg.tie_embeddings else params['lm_head']
    return _logits(x_BLD, w_DV, jnp.dtype(self.cfg.dtype), self.cfg.real_vocab)


def _logits(x_BLD, w_DV, dt, real_vocab: int):
  """Logits [B, L, V]; columns from real_vocab on (padding rows) the dtype's lowest value.

  A masked column adds exp(lowest - max) = 0 to the softmax: padding changes
  neither the loss nor what sampling picks, and a product with 0 stays finite.
  """
  logits_BLV = jnp.einsum('BLD,DV->BLV', x_BLD, w_DV.astype(dt))
  if real_vocab < logits_BLV.shape[-1]:
    real_V = jnp.arange(logits_BLV.shape[-1]) < real_vocab
    logits_BLV = jnp.where(real_V, logits_BLV, jnp.finfo(logits_BLV.dtype).min)
  return constrain(logits_BLV, ('batch', 'length', 'act_vocab'))


def _lookup(table_VD, tokens_BL):
  """Rows of the embedding table (a quantized table brings its own `take_rows`)."""
  if hasattr(table_VD, 'take_rows'):
    return table_VD.take_rows(tokens_BL)
  return jnp.take(table_VD, tokens_BL, axis=0)


def init_cache(cfg: ModelConfig, batch: int, length: int) -> Cache:
  """An empty cache of `length` slots for `batch` rows, in the compute dtype."""
  shape = (cfg.num_layers, batch, length, cfg.kv_heads, cfg.head_dim)
  cache = {'k': jnp.zeros(shape, cfg.dtype), 'v': jnp.zeros(shape, cfg.dtype),
           'index': jnp.zeros((cfg.num_layers, batch), jnp.int32)}
  return {k: constrain(v, CACHE_AXES[k]) for k, v in cache.items()}


def count_params(params) -> int:
  """Number of scalars in a params tree (boxed or not)."""
  return sum(x.size for x in jax.tree.leaves(nn.meta.unbox(params)))
