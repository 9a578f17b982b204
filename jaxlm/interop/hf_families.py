"""Each Hugging Face model family's config and tensor names, to and from jaxlm's model.

One table for GPT-2 and the Llama family (Llama, Mistral, Qwen2): what a
config.json fixes in jaxlm's ModelConfig, which HF tensors make up each jaxlm
parameter, and back. Pure functions of dicts and numpy arrays; reading and
writing directories is jaxlm/interop/hf.py's.

GPT-2's Conv1D weights are [in, out], as jaxlm's; the Llama family's
nn.Linear weights are [out, in], so they are transposed. Both compute what
jaxlm computes: GPT-2's `gelu_new` / `gelu_pytorch_tanh` is nn.gelu (tanh);
the Llama family's RMSNorm, silu-gated MLP and half-split RoPE (default or
llama3 frequencies) are jaxlm's rmsnorm, swiglu and rope options.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from jaxlm.config import ConfigError, MlpKind, ModelConfig, NormKind, PositionKind

TANH_GELUS = ('gelu_new', 'gelu_pytorch_tanh')  # both 0.5x(1 + tanh(...)), as nn.gelu
LAYER_NORM_EPS = 1e-5  # GPT-2's
LLAMA_LIKE = ('llama', 'mistral', 'qwen2')
FAMILIES = ('gpt2',) + LLAMA_LIKE
ARCHITECTURES = {'gpt2': 'GPT2LMHeadModel', 'llama': 'LlamaForCausalLM',
                 'mistral': 'MistralForCausalLM', 'qwen2': 'Qwen2ForCausalLM'}
# Buffers that old transformers versions saved with the weights: masks, not weights.
_BUFFER = re.compile(r'(h\.\d+\.attn\.(bias|masked_bias)|rotary_emb\.inv_freq)$')


def family_of(hf: dict, where: str) -> str:
  """The family of a config.json's model_type; names the supported ones otherwise."""
  family = hf.get('model_type')
  if family not in FAMILIES:
    raise ConfigError(f'{where}: model_type={family!r} is not supported; jaxlm reads'
                      f' {", ".join(FAMILIES)} ({", ".join(ARCHITECTURES.values())})')
  return family


def _require(hf: dict, keys, where: str, family: str) -> None:
  missing = [k for k in keys if k not in hf]
  if missing:
    raise ConfigError(f'{where} lacks {", ".join(missing)}; it is not a complete {family}'
                      ' config, save the model again with save_pretrained')


def _check(where: str, checks) -> None:
  for field, value, ok, why in checks:
    if not ok:
      raise ConfigError(f'{where}: {field}={value!r} is not supported; {why}')


# ---------------------------------------------------------------- config.json -> ModelConfig


def model_settings(hf: dict, where: str) -> dict[str, Any]:
  """The jaxlm model settings a checked config.json fixes (ModelConfig field -> value)."""
  family = family_of(hf, where)
  return (_gpt2_settings if family == 'gpt2' else _llama_settings)(hf, where, family)


def _gpt2_settings(hf: dict, where: str, family: str) -> dict[str, Any]:
  _require(hf, ('n_embd', 'n_head', 'n_layer', 'n_positions', 'vocab_size'), where, family)
  g = hf.get
  _check(where, (
      ('activation_function', g('activation_function', 'gelu_new'),
       g('activation_function', 'gelu_new') in TANH_GELUS,
       f'jaxlm uses the tanh GELU ({", ".join(TANH_GELUS)})'),
      ('layer_norm_epsilon', g('layer_norm_epsilon', LAYER_NORM_EPS),
       g('layer_norm_epsilon', LAYER_NORM_EPS) == LAYER_NORM_EPS,
       f'jaxlm imports GPT-2 with its LayerNorm epsilon {LAYER_NORM_EPS}'),
      ('tie_word_embeddings', g('tie_word_embeddings', True), g('tie_word_embeddings', True),
       'jaxlm imports GPT-2 with tied input and output embeddings'),
      ('scale_attn_weights', g('scale_attn_weights', True), g('scale_attn_weights', True),
       'jaxlm scales attention by 1/sqrt(head_dim)'),
      ('scale_attn_by_inverse_layer_idx', g('scale_attn_by_inverse_layer_idx', False),
       not g('scale_attn_by_inverse_layer_idx', False), 'jaxlm scales every layer alike'),
      ('add_cross_attention', g('add_cross_attention', False),
       not g('add_cross_attention', False), 'jaxlm is a decoder without cross-attention'),
  ))
  d_model, heads = hf['n_embd'], hf['n_head']
  if d_model % heads:
    raise ConfigError(f'{where}: n_head={heads} does not divide n_embd={d_model}')
  return {
      'num_layers': hf['n_layer'], 'num_heads': heads, 'd_model': d_model,
      'd_ff': hf.get('n_inner') or 4 * d_model, 'max_len': hf['n_positions'],
      'vocab_size': hf['vocab_size'], 'tie_embeddings': True, 'use_bias': True,
      'norm': NormKind.LAYERNORM.value, 'norm_eps': LAYER_NORM_EPS,
      'positions': PositionKind.LEARNED.value, 'mlp': MlpKind.GELU.value,
      'num_kv_heads': 0, 'qkv_bias': False, 'head_size': 0,
  }


def rope_parameters(hf: dict) -> dict:
  """RoPE settings from transformers 5's `rope_parameters` or 4.x's rope_theta/rope_scaling."""
  if hf.get('rope_parameters'):
    return dict(hf['rope_parameters'])
  rope = dict(hf.get('rope_scaling') or {})
  rope.setdefault('rope_type', rope.pop('type', 'default'))
  rope['rope_theta'] = hf.get('rope_theta', 10000.0)
  return rope


def _llama_settings(hf: dict, where: str, family: str) -> dict[str, Any]:
  _require(hf, ('hidden_size', 'intermediate_size', 'num_hidden_layers',
                'num_attention_heads', 'max_position_embeddings', 'vocab_size'),
           where, family)
  g = hf.get
  rope = rope_parameters(hf)
  rope_type = rope.get('rope_type', 'default')
  window = g('sliding_window') if (family == 'mistral' or g('use_sliding_window')) else None
  _check(where, (
      ('hidden_act', g('hidden_act', 'silu'), g('hidden_act', 'silu') == 'silu',
       'jaxlm\'s swiglu MLP gates with silu'),
      ('rope_type', rope_type, rope_type in ('default', 'llama3'),
       'jaxlm computes default and llama3 RoPE frequencies'),
      ('attention_bias', g('attention_bias', False), not g('attention_bias', False),
       'jaxlm has q/k/v biases (Qwen2) but no output-projection bias without norm biases'),
      ('mlp_bias', g('mlp_bias', False), not g('mlp_bias', False),
       'jaxlm\'s Llama-style MLP has no biases'),
      ('pretraining_tp', g('pretraining_tp', 1), g('pretraining_tp', 1) == 1,
       'set it to 1: it only splits the same matmuls'),
  ))
  d_model, heads = hf['hidden_size'], hf['num_attention_heads']
  kv_heads = g('num_key_value_heads') or heads
  head_dim = g('head_dim') or d_model // heads
  if heads % kv_heads:
    raise ConfigError(f'{where}: num_key_value_heads={kv_heads} does not divide'
                      f' num_attention_heads={heads}')
  if head_dim % 2:
    raise ConfigError(f'{where}: head_dim={head_dim} is odd; RoPE needs an even head'
                      ' dimension')
  max_len = hf['max_position_embeddings']
  if window and window < max_len:
    # jaxlm attends to every earlier position: equal to the sliding window up to its size.
    max_len = window
  settings = {
      'num_layers': hf['num_hidden_layers'], 'num_heads': heads, 'd_model': d_model,
      'd_ff': hf['intermediate_size'], 'max_len': max_len, 'vocab_size': hf['vocab_size'],
      'tie_embeddings': bool(g('tie_word_embeddings', False)), 'use_bias': False,
      'norm': NormKind.RMSNORM.value, 'norm_eps': float(g('rms_norm_eps', 1e-6)),
      'positions': PositionKind.ROPE.value, 'rope_theta': float(rope.get('rope_theta', 1e4)),
      'rope_scaling': 0.0, 'mlp': MlpKind.SWIGLU.value,
      'num_kv_heads': 0 if kv_heads == heads else kv_heads,
      'qkv_bias': family == 'qwen2',
      'head_size': 0 if head_dim * heads == d_model else head_dim,
  }
  if rope_type == 'llama3':
    settings.update(rope_scaling=float(rope['factor']),
                    rope_low_freq_factor=float(rope['low_freq_factor']),
                    rope_high_freq_factor=float(rope['high_freq_factor']),
                    rope_original_max_len=int(rope['original_max_position_embeddings']))
  return settings


# ---------------------------------------------------------------- ModelConfig -> config.json


def family_for(m: ModelConfig) -> str:
  """The HF family that computes what model `m` computes; ConfigError if none does."""
  gpt2 = (m.norm is NormKind.LAYERNORM and m.positions is PositionKind.LEARNED
          and m.mlp is MlpKind.GELU and m.use_bias and m.tie_embeddings
          and m.kv_heads == m.num_heads and not m.head_size
          and m.norm_eps == LAYER_NORM_EPS)
  llama = (m.norm is NormKind.RMSNORM and m.positions is PositionKind.ROPE
           and m.mlp is MlpKind.SWIGLU and not m.use_bias)
  if gpt2:
    return 'gpt2'
  if llama:
    return 'qwen2' if m.qkv_bias else 'llama'
  raise ConfigError(
      'this run\'s model is neither GPT-2 (layernorm, learned positions, gelu, use_bias,'
      ' tied embeddings) nor Llama-style (rmsnorm, rope, swiglu, no use_bias); only those'
      ' can be exported')


def hf_config(m: ModelConfig, family: str, source: dict | None = None) -> dict:
  """A config.json for model `m`: the source's (if imported) with jaxlm's shapes over it."""
  if family == 'gpt2':
    ours = {
        'architectures': ['GPT2LMHeadModel'], 'model_type': 'gpt2',
        'activation_function': 'gelu_new', 'layer_norm_epsilon': LAYER_NORM_EPS,
        'vocab_size': m.vocab_size, 'n_positions': m.max_len, 'n_embd': m.d_model,
        'n_layer': m.num_layers, 'n_head': m.num_heads, 'n_inner': m.d_ff,
        'resid_pdrop': m.dropout, 'embd_pdrop': m.dropout, 'attn_pdrop': m.dropout,
        'initializer_range': 0.02, 'tie_word_embeddings': True, 'scale_attn_weights': True,
        'scale_attn_by_inverse_layer_idx': False, 'reorder_and_upcast_attn': False,
        'bos_token_id': None, 'eos_token_id': None,
    }
  else:
    rope = {'rope_type': 'default', 'rope_theta': m.rope_theta}
    if m.rope_scaling:
      rope.update(rope_type='llama3', factor=m.rope_scaling,
                  low_freq_factor=m.rope_low_freq_factor,
                  high_freq_factor=m.rope_high_freq_factor,
                  original_max_position_embeddings=m.rope_original_max_len)
    ours = {
        'architectures': [ARCHITECTURES[family]], 'model_type': family,
        'hidden_act': 'silu', 'hidden_size': m.d_model, 'intermediate_size': m.d_ff,
        'num_hidden_layers': m.num_layers, 'num_attention_heads': m.num_heads,
        'num_key_value_heads': m.kv_heads, 'head_dim': m.head_dim,
        'max_position_embeddings': m.max_len, 'rms_norm_eps': m.norm_eps,
        'vocab_size': m.vocab_size, 'tie_word_embeddings': m.tie_embeddings,
        'rope_parameters': rope, 'attention_dropout': m.dropout,
        'initializer_range': 0.02,
    }
    if family == 'llama':
      ours.update(attention_bias=False, mlp_bias=False)
  if source is None or source.get('model_type') != family:
    return ours
  # Keep what the source said that jaxlm does not set (activation name, token ids,
  # sliding window, ...); the older rope keys give way to rope_parameters.
  kept = {k: v for k, v in source.items()
          if k not in ('rope_theta', 'rope_scaling', 'transformers_version', 'dtype',
                       'torch_dtype')}
  if family == 'gpt2':
    ours.pop('activation_function')
    ours.pop('bos_token_id')
    ours.pop('eos_token_id')
  if 'max_position_embeddings' in kept and family != 'gpt2':
    ours.pop('max_position_embeddings')  # a sliding window capped max_len, not the source
  return {**kept, **ours}


# ---------------------------------------------------------------- tensors


def expected_shapes(m: ModelConfig, family: str) -> dict[str, tuple[int, ...]]:
  """Every HF tensor name of the family (without its `transformer.`/`model.` prefix)."""
  D, F, V, N = m.d_model, m.d_ff, m.vocab_size, m.num_layers
  H, G, K = m.num_heads, m.kv_heads, m.head_dim
  if family == 'gpt2':
    top = {'wte.weight': (V, D), 'wpe.weight': (m.max_len, D),
           'ln_f.weight': (D,), 'ln_f.bias': (D,)}
    layer = {'ln_1.weight': (D,), 'ln_1.bias': (D,), 'ln_2.weight': (D,),
             'ln_2.bias': (D,), 'attn.c_attn.weight': (D, 3 * D),
             'attn.c_attn.bias': (3 * D,), 'attn.c_proj.weight': (D, D),
             'attn.c_proj.bias': (D,), 'mlp.c_fc.weight': (D, F),
             'mlp.c_fc.bias': (F,), 'mlp.c_proj.weight': (F, D), 'mlp.c_proj.bias': (D,)}
    prefix = 'h'
  else:
    top = {'embed_tokens.weight': (V, D), 'norm.weight': (D,)}
    if not m.tie_embeddings:
      top['lm_head.weight'] = (V, D)
    layer = {'input_layernorm.weight': (D,), 'post_attention_layernorm.weight': (D,),
             'self_attn.q_proj.weight': (H * K, D), 'self_attn.k_proj.weight': (G * K, D),
             'self_attn.v_proj.weight': (G * K, D), 'self_attn.o_proj.weight': (D, H * K),
             'mlp.gate_proj.weight': (F, D), 'mlp.up_proj.weight': (F, D),
             'mlp.down_proj.weight': (D, F)}
    if m.qkv_bias:
      layer.update({'self_attn.q_proj.bias': (H * K,), 'self_attn.k_proj.bias': (G * K,),
                    'self_attn.v_proj.bias': (G * K,)})
    prefix = 'layers'
  shapes = dict(top)
  for i in range(N):
    shapes.update({f'{prefix}.{i}.{k}': v for k, v in layer.items()})
  return shapes


def strip_prefix(name: str, family: str) -> str:
  """A HF tensor name without the base model's prefix (lm_head has none)."""
  return name.removeprefix('transformer.' if family == 'gpt2' else 'model.')


def is_buffer(name: str) -> bool:
  return bool(_BUFFER.search(name))


def top_params_from_hf(t: Mapping[str, np.ndarray], m: ModelConfig, family: str) -> dict:
  """The params outside the layers (embeddings, final norm, output layer)."""
  return (_gpt2_top if family == 'gpt2' else _llama_top)(t, m)


def block_params_from_hf(t: Mapping[str, np.ndarray], m: ModelConfig, family: str,
                         layers: Sequence[int]) -> dict:
  """params['stack']['blocks'] of the given layers only: each leaf [len(layers), ...]."""
  prefix = 'h' if family == 'gpt2' else 'layers'

  def stacked(name, f: Callable = lambda x: x):  # [N, ...]
    return np.stack([f(t[f'{prefix}.{i}.{name}']) for i in layers])

  blocks = _gpt2_blocks if family == 'gpt2' else _llama_blocks
  return blocks(dataclasses.replace(m, num_layers=len(layers)), stacked)


def _gpt2_top(t, m: ModelConfig) -> dict:
  return {'wte': t['wte.weight'], 'wpe': t['wpe.weight'],
          'ln_final': {'scale': t['ln_f.weight'], 'bias': t['ln_f.bias']}}


def _gpt2_blocks(m: ModelConfig, stacked) -> dict:
  N, D, H, K = m.num_layers, m.d_model, m.num_heads, m.head_dim
  qkv_NDCHK = stacked('attn.c_attn.weight').reshape(N, D, 3, H, K)
  return {
      'ln_attn': {'scale': stacked('ln_1.weight'), 'bias': stacked('ln_1.bias')},
      'attn': {
          'qkv': qkv_NDCHK.transpose(0, 2, 1, 3, 4),
          'qkv_bias': stacked('attn.c_attn.bias').reshape(N, 3, H, K),
          'out': stacked('attn.c_proj.weight').reshape(N, H, K, D),
          'out_bias': stacked('attn.c_proj.bias'),
      },
      'ln_mlp': {'scale': stacked('ln_2.weight'), 'bias': stacked('ln_2.bias')},
      'mlp': {
          'up': stacked('mlp.c_fc.weight'), 'up_bias': stacked('mlp.c_fc.bias'),
          'down': stacked('mlp.c_proj.weight'), 'down_bias': stacked('mlp.c_proj.bias'),
      },
  }


def _llama_top(t, m: ModelConfig) -> dict:
  top = {'wte': t['embed_tokens.weight'], 'ln_final': {'scale': t['norm.weight']}}
  if not m.tie_embeddings:
    top['lm_head'] = t['lm_head.weight'].T
  return top


def _llama_blocks(m: ModelConfig, stacked) -> dict:
  N, D, H, G, K = m.num_layers, m.d_model, m.num_heads, m.kv_heads, m.head_dim
  # nn.Linear [out, in] -> jaxlm [in, out], the output split into heads.
  q_NDHK = stacked('self_attn.q_proj.weight', np.transpose).reshape(N, D, H, K)
  k_NDGK, v_NDGK = (stacked(f'self_attn.{x}_proj.weight', np.transpose).reshape(N, D, G, K)
                    for x in 'kv')
  attn = {'out': stacked('self_attn.o_proj.weight', np.transpose).reshape(N, H, K, D)}
  if G == H:
    attn['qkv'] = np.stack([q_NDHK, k_NDGK, v_NDGK], axis=1)
  else:
    attn['q'], attn['kv'] = q_NDHK, np.stack([k_NDGK, v_NDGK], axis=1)
  if m.qkv_bias:
    q_NHK = stacked('self_attn.q_proj.bias').reshape(N, H, K)
    k_NGK, v_NGK = (stacked(f'self_attn.{x}_proj.bias').reshape(N, G, K) for x in 'kv')
    if G == H:
      attn['qkv_bias'] = np.stack([q_NHK, k_NGK, v_NGK], axis=1)
    else:
      attn['q_bias'], attn['kv_bias'] = q_NHK, np.stack([k_NGK, v_NGK], axis=1)
  return {
      'ln_attn': {'scale': stacked('input_layernorm.weight')},
      'attn': attn,
      'ln_mlp': {'scale': stacked('post_attention_layernorm.weight')},
      'mlp': {'gate': stacked('mlp.gate_proj.weight', np.transpose),
              'up': stacked('mlp.up_proj.weight', np.transpose),
              'down': stacked('mlp.down_proj.weight', np.transpose)},
  }


def hf_from_params(p: dict, m: ModelConfig, family: str) -> dict[str, np.ndarray]:
  """HF tensors (full names, as save_pretrained writes them) from numpy jaxlm params."""
  if family == 'gpt2':
    tensors, prefix, per_layer = _gpt2_tensors(p, m)
    base = 'transformer.'
  else:
    tensors, prefix, per_layer = _llama_tensors(p, m)
    base = 'model.'
  for i in range(m.num_layers):
    tensors.update({f'{prefix}.{i}.{k}': v[i] for k, v in per_layer.items()})
  out = {(k if k == 'lm_head.weight' else base + k): v for k, v in tensors.items()}
  # save_file wants C-contiguous arrays; transposes and layer slices may not be.
  return {k: np.ascontiguousarray(v) for k, v in out.items()}


def _gpt2_tensors(p, m: ModelConfig):
  N, D = m.num_layers, m.d_model
  b = p['stack']['blocks']
  per_layer = {
      'ln_1.weight': b['ln_attn']['scale'], 'ln_1.bias': b['ln_attn']['bias'],
      'attn.c_attn.weight': b['attn']['qkv'].transpose(0, 2, 1, 3, 4).reshape(N, D, 3 * D),
      'attn.c_attn.bias': b['attn']['qkv_bias'].reshape(N, 3 * D),
      'attn.c_proj.weight': b['attn']['out'].reshape(N, D, D),
      'attn.c_proj.bias': b['attn']['out_bias'],
      'ln_2.weight': b['ln_mlp']['scale'], 'ln_2.bias': b['ln_mlp']['bias'],
      'mlp.c_fc.weight': b['mlp']['up'], 'mlp.c_fc.bias': b['mlp']['up_bias'],
      'mlp.c_proj.weight': b['mlp']['down'], 'mlp.c_proj.bias': b['mlp']['down_bias'],
  }
  top = {'wte.weight': p['wte'], 'wpe.weight': p['wpe'],
         'ln_f.weight': p['ln_final']['scale'], 'ln_f.bias': p['ln_final']['bias']}
  return top, 'h', per_layer


def _llama_tensors(p, m: ModelConfig):
  N, D, H, G, K = m.num_layers, m.d_model, m.num_heads, m.kv_heads, m.head_dim
  b = p['stack']['blocks']
  a = b['attn']
  if G == H:
    q_NDHK, k_NDGK, v_NDGK = (a['qkv'][:, i] for i in range(3))
  else:
    q_NDHK, (k_NDGK, v_NDGK) = a['q'], (a['kv'][:, i] for i in range(2))
  linear = lambda x_NIO: x_NIO.transpose(0, 2, 1)  # [N, in, out] -> nn.Linear's [N, out, in]
  per_layer = {
      'input_layernorm.weight': b['ln_attn']['scale'],
      'post_attention_layernorm.weight': b['ln_mlp']['scale'],
      'self_attn.q_proj.weight': linear(q_NDHK.reshape(N, D, H * K)),
      'self_attn.k_proj.weight': linear(k_NDGK.reshape(N, D, G * K)),
      'self_attn.v_proj.weight': linear(v_NDGK.reshape(N, D, G * K)),
      'self_attn.o_proj.weight': linear(a['out'].reshape(N, H * K, D)),
      'mlp.gate_proj.weight': linear(b['mlp']['gate']),
      'mlp.up_proj.weight': linear(b['mlp']['up']),
      'mlp.down_proj.weight': linear(b['mlp']['down']),
  }
  if m.qkv_bias:
    if G == H:
      q_NHK, k_NGK, v_NGK = (a['qkv_bias'][:, i] for i in range(3))
    else:
      q_NHK, (k_NGK, v_NGK) = a['q_bias'], (a['kv_bias'][:, i] for i in range(2))
    per_layer.update({'self_attn.q_proj.bias': q_NHK.reshape(N, H * K),
                      'self_attn.k_proj.bias': k_NGK.reshape(N, G * K),
                      'self_attn.v_proj.bias': v_NGK.reshape(N, G * K)})
  top = {'embed_tokens.weight': p['wte'], 'norm.weight': p['ln_final']['scale']}
  if not m.tie_embeddings:
    top['lm_head.weight'] = p['lm_head'].T
  return top, 'layers', per_layer
