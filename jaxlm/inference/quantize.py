"""int8 weight-only quantization: per-output-channel scales, dequantized per layer.

Every matmul weight W (attention qkv and out, MLP up and down, the token
embedding, an untied lm_head) becomes a `QArray`: int8 values q and float32
scales s, one per output channel (the product of the axes the matmul does not
contract), with

  s = max |W| over the contracted axes / 127,   q = round(W / s),

so each weight is off by at most s / 2. The token embedding's channels are
its rows (vocabulary entries): the same scale serves the lookup and the tied
output layer. Position embeddings, norms and biases stay float32 (a few per
cent of the parameters).

The model (jaxlm/model/gpt.py) uses weights only through `.astype(dtype)`, `.T`
and its embedding lookup, which a QArray answers by dequantizing, so the
int8 tree goes through the same code. Under the scanned blocks each layer's
weights are dequantized as that layer runs: memory holds the int8 weights
plus the dequantized copy of the layer (or output layer) at work, not a
float32 model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

# Parameter name -> the axes its matmul contracts (from the end, so the
# leading layers axis of the blocks does not matter).
CONTRACTED = {
    'qkv': (-3,),  # [3, D, H, K]: D
    'q': (-3,),  # [D, H, K]: D (grouped-query attention)
    'kv': (-3,),  # [2, D, G, K]: D
    'gate': (-2,),  # [D, F]: D (swiglu)
    'out': (-3, -2),  # [H, K, D]: H, K
    'up': (-2,),  # [D, F]: D
    'down': (-2,),  # [F, D]: F
    'wte': (-1,),  # [V, D]: D (rows are looked up; the tied head contracts D)
    'lm_head': (-2,),  # [D, V]: D
}


class QArray(struct.PyTreeNode):
  """A weight as int8 values and per-output-channel float32 scales."""
  # q comes first: flax checks a stored parameter's first leaf against the
  # shape the model declares, and q has exactly that shape.
  q: jax.Array  # int8, the weight's shape
  scale: jax.Array  # float32, the weight's shape with the contracted axes of size 1

  @property
  def shape(self):
    return self.q.shape

  @property
  def T(self) -> QArray:
    return QArray(self.q.T, self.scale.T)

  def astype(self, dtype) -> jax.Array:
    """The dequantized weight, computed in float32 and cast."""
    return (self.q.astype(jnp.float32) * self.scale).astype(dtype)

  def take_rows(self, ids) -> jax.Array:
    """Dequantized rows (an embedding lookup), float32."""
    return jnp.take(self.q, ids, axis=0).astype(jnp.float32) * jnp.take(self.scale, ids, axis=0)


def quantize_array(w, contracted: tuple[int, ...]) -> QArray:
  """Symmetric int8 with one scale per output channel: |dequantized - w| <= scale / 2."""
  w = jnp.asarray(w, jnp.float32)
  scale = jnp.max(jnp.abs(w), axis=contracted, keepdims=True) / 127.0
  q = jnp.round(w / jnp.where(scale > 0, scale, 1.0))
  return QArray(jnp.clip(q, -127, 127).astype(jnp.int8), scale)


def quantize(params):
  """The params tree with its matmul weights as QArrays; everything else as is."""
  def leaf(path, x):
    name = getattr(path[-1], 'key', None)
    return quantize_array(x, CONTRACTED[name]) if name in CONTRACTED else x
  return jax.jit(lambda p: jax.tree_util.tree_map_with_path(leaf, p))(params)


def dequantize(params):
  """float32 weights from a quantized tree: what the int8 model computes with."""
  return jax.tree.map(lambda x: x.astype(jnp.float32) if isinstance(x, QArray) else x,
                      params, is_leaf=lambda x: isinstance(x, QArray))


def nbytes(params) -> int:
  """Bytes the parameters take in memory (int8 values and scales counted)."""
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
