"""FLOPs per token, peak FLOP/s, and model FLOPs utilisation (MFU)."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from jaxlm.config import MlpKind, ModelConfig

# Nominal dense peak FLOP/s per chip, by device_kind substring (bf16 / fp16).
NOMINAL_PEAK = {
    'H200': 989e12, 'H100': 989e12, 'A100': 312e12, 'L4': 121e12,
    'TPU v6': 918e12, 'TPU v5p': 459e12, 'TPU v5 lite': 197e12, 'TPU v5e': 197e12,
    'TPU v4': 275e12, 'TPU v3': 123e12,
}


def non_embedding_params(m: ModelConfig) -> int:
  """Parameters counted for FLOPs: all but the position table (as nanoGPT)."""
  D, F, V, N = m.d_model, m.d_ff, m.vocab_size, m.num_layers
  HK, GK = m.num_heads * m.head_dim, m.kv_heads * m.head_dim
  mlp_in = 2 if m.mlp is MlpKind.SWIGLU else 1  # gate and up, or up
  # q, k, v, out; the MLP's matrices; two norm scales
  per_block = D * (HK + 2 * GK) + HK * D + (mlp_in + 1) * D * F + 2 * D
  if m.use_bias:
    per_block += HK + 2 * GK + D + mlp_in * F + D + 2 * D
  elif m.qkv_bias:
    per_block += HK + 2 * GK
  head = 0 if m.tie_embeddings else D * V
  final_norm = 2 * D if m.use_bias else D
  return N * per_block + V * D + head + final_norm


def flops_per_token(m: ModelConfig, seq_len: int) -> float:
  """Training FLOPs per token: 6N + 12·L·T·(heads · head_dim) (PaLM appendix B / nanoGPT)."""
  return 6 * non_embedding_params(m) + 12 * m.num_layers * seq_len * m.num_heads * m.head_dim


def measure_matmul_peak(n: int = 2048, dtype=jnp.float32, reps: int = 5) -> float:
  """Measured FLOP/s of an n×n×n matmul on the first local device."""
  device = jax.local_devices()[0]
  a = jax.device_put(jnp.ones((n, n), dtype), device)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = float('inf')
  for _ in range(reps):
    t = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n ** 3 / best


def peak_flops_per_second() -> tuple[float, str]:
  """Total peak FLOP/s of this job and where the number comes from.

  Known accelerators use their nominal peak per chip times the chip count.
  Otherwise (CPU) the host's measured matmul peak times the process count:
  simulated CPU devices share the host's cores, so they add no compute.
  """
  device = jax.devices()[0]
  for kind, peak in NOMINAL_PEAK.items():
    if kind.lower() in device.device_kind.lower():
      return peak * jax.device_count(), f'nominal {kind}'
  return measure_matmul_peak() * jax.process_count(), 'measured matmul'


def mfu(tokens_per_second: float, flops_token: float, peak: float) -> float:
  return tokens_per_second * flops_token / peak
