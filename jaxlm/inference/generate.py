"""Text from a trained model: one jitted prefill, then a jitted loop of cached steps.

`generate(params, model, prompts, max_new_tokens, ...)` takes a batch of
prompts of any lengths and `num_samples` samples of each. The prompts are
right-padded into one array; `prefill` runs it through the model once,
filling the key/value cache (jaxlm/model/gpt.py) and choosing every row's first
token; `decode` is a `lax.fori_loop` of one-token steps on that cache. Each
row keeps its own position, so a prompt gives the same text in any batch.

Randomness: sample j of a prompt draws step i from
fold_in(fold_in(PRNGKey(seed), crc32(prompt ids, j)), i): a (prompt, seed, j)
always gives the same text, whatever else is in the batch, and different
prompts or samples draw independent streams. Temperature 0 is greedy;
otherwise logits / temperature keep their top_k (0: all), then the smallest
set of tokens whose probability reaches top_p (1: all), and one is drawn.

Context: model.max_len is the size of the learned position table, so a row
holds at most max_len positions. A prompt longer than that is an error. When
a row's text outgrows it, the row's cache is rebuilt from its last
max_len // 2 tokens (at positions 0, 1, ...) and decoding goes on, so text
can be any length and the model always sees at least its last max_len // 2
tokens; `Result.shifted` says it happened. Up to max_len tokens, the text is
what full recomputation gives.

Sharding: called under `sharding.activate(mesh)` with the parameters in the
training layout (`sharding.mesh_shardings`), the rows go over `data` (the
batch is padded to a multiple of it) and the cache is split by heads over
`model`, as the rule table says.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxlm.model.gpt import GPT, init_cache


@dataclasses.dataclass(frozen=True)
class Sampling:
  """How the next token is chosen from the logits."""
  temperature: float = 0.0  # 0: greedy (argmax)
  top_k: int = 0  # keep the k most likely tokens; 0: all
  top_p: float = 1.0  # then the fewest whose probability reaches p; 1: all

  def __post_init__(self):
    if not self.temperature >= 0:
      raise ValueError(f'temperature={self.temperature} must be >= 0 (0 is greedy)')
    if self.top_k < 0:
      raise ValueError(f'top_k={self.top_k} must be >= 0 (0 keeps every token)')
    if not 0 < self.top_p <= 1:
      raise ValueError(f'top_p={self.top_p} must be in (0, 1] (1 keeps every token)')


@dataclasses.dataclass(frozen=True)
class Result:
  tokens: list[list[list[int]]]  # [prompt][sample] -> the new ids
  shifted: bool  # some row outgrew model.max_len and its context was shifted


def _filter(logits_BV, top_k: int, top_p: float):
  """Logits outside the top_k, then outside the top_p mass, set to -inf."""
  if top_k == 0 and top_p >= 1:
    return logits_BV
  V = logits_BV.shape[-1]
  sorted_BV = -jnp.sort(-logits_BV, axis=-1)  # descending
  keep_BV = jnp.ones(sorted_BV.shape, bool)
  if top_k:
    keep_BV &= jnp.arange(V)[None] < top_k
  if top_p < 1:
    probs_BV = jax.nn.softmax(jnp.where(keep_BV, sorted_BV, -jnp.inf), axis=-1)
    before_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV  # mass of the likelier ones
    keep_BV &= before_BV < top_p
  count_B1 = keep_BV.sum(axis=-1, keepdims=True)  # >= 1: the likeliest is always kept
  cutoff_B1 = jnp.take_along_axis(sorted_BV, count_B1 - 1, axis=-1)
  return jnp.where(logits_BV >= cutoff_B1, logits_BV, -jnp.inf)


def choose(logits_BV, keys_B, sampling: Sampling):
  """The next token of every row: int32 [B]."""
  logits_BV = logits_BV.astype(jnp.float32)
  if sampling.temperature == 0:
    return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
  logits_BV = _filter(logits_BV / sampling.temperature, sampling.top_k, sampling.top_p)
  return jax.vmap(jax.random.categorical)(keys_B, logits_BV).astype(jnp.int32)


def _keys(seed, stream_B, step):
  base = jax.random.PRNGKey(seed)
  return jax.vmap(lambda s: jax.random.fold_in(jax.random.fold_in(base, s), step))(stream_B)


def stream(prompt: Sequence[int], sample: int) -> int:
  """The random stream of one sample of one prompt (see the module docstring)."""
  return zlib.crc32(np.asarray([*prompt, sample], np.int64).tobytes())


def _last_logits(params, model: GPT, tokens_BL, cache, lengths_B):
  """Runs tokens_BL into the cache; the logits after each row's last real token."""
  hidden_BLD, cache = model.apply({'params': params}, tokens_BL, return_hidden=True,
                                  cache=cache)
  last_B1D = jnp.take_along_axis(hidden_BLD, (lengths_B - 1)[:, None, None], axis=1)
  logits_B1V = model.apply({'params': params}, last_B1D, method=GPT.head)
  return logits_B1V[:, 0], cache


@functools.partial(jax.jit, static_argnames=('model', 'sampling', 'cache_len'))
def prefill(params, prompt_BP, lengths_B, stream_B, seed, *, model: GPT,
            sampling: Sampling, cache_len: int):
  """Right-padded prompts through the model once: (first tokens [B], cache)."""
  cache = init_cache(model.cfg, prompt_BP.shape[0], cache_len)
  logits_BV, cache = _last_logits(params, model, prompt_BP, cache, lengths_B)
  # Slots past a row's length hold padding; the next steps overwrite them.
  cache['index'] = jnp.broadcast_to(lengths_B[None], cache['index'].shape)
  return choose(logits_BV, _keys(seed, stream_B, 0), sampling), cache


def _step(params, model: GPT, cache, tokens_B):
  logits_B1V, cache = model.apply({'params': params}, tokens_B[:, None], cache=cache)
  return logits_B1V[:, 0], cache


def _select_rows(mask_B, new, old, axis: int):
  """`new` in the rows where mask_B holds, else `old`; rows along `axis`."""
  shape = [1] * old.ndim
  shape[axis] = -1
  return jnp.where(mask_B.reshape(shape), new, old)


def _step_or_shift(params, model: GPT, cache, tokens_B, history_BT, count_B, keep: int):
  """A step; rows whose cache is full instead restart it from their last `keep` tokens."""
  full_B = cache['index'][0] >= cache['k'].shape[2]

  def shift(_):
    logits_BV, stepped = _step(params, model, cache, tokens_B)  # garbage in full rows
    window_BK = jax.vmap(lambda h, n: jax.lax.dynamic_slice(h, (n - keep,), (keep,)))(
        history_BT, count_B)
    empty = init_cache(model.cfg, tokens_B.shape[0], cache['k'].shape[2])
    fresh_logits_BV, fresh = _last_logits(params, model, window_BK, empty,
                                          jnp.full_like(count_B, keep))
    cache_out = jax.tree.map(lambda new, old: _select_rows(full_B, new, old, 1), fresh, stepped)
    return _select_rows(full_B, fresh_logits_BV, logits_BV, 0), cache_out

  return jax.lax.cond(full_B.any(), shift,
                      lambda _: _step(params, model, cache, tokens_B), None)


@functools.partial(jax.jit, static_argnames=('model', 'sampling', 'num_tokens', 'keep'))
def decode(params, cache, first_B, prompt_BP, lengths_B, stream_B, seed, *, model: GPT,
           sampling: Sampling, num_tokens: int, keep: int):
  """Tokens [B, num_tokens]: first_B, then one cached step per token.

  keep=0: no row outgrows the cache. Otherwise the rows' text so far is kept
  too, and a full row restarts from its last `keep` tokens.
  """
  B, T = first_B.shape[0], num_tokens
  out_BT = jnp.zeros((B, T), jnp.int32).at[:, 0].set(first_B)
  if keep:
    slots_T = jnp.arange(prompt_BP.shape[1] + T)[None]
    history_BT = jnp.pad(prompt_BP, ((0, 0), (0, T)))
    history_BT = jnp.where(slots_T == lengths_B[:, None], first_B[:, None], history_BT)
  else:
    history_BT = jnp.zeros((B, 0), jnp.int32)

  def body(i, carry):
    out_BT, cache, history_BT, count_B = carry
    tokens_B = jax.lax.dynamic_index_in_dim(out_BT, i - 1, axis=1, keepdims=False)
    if keep:
      logits_BV, cache = _step_or_shift(params, model, cache, tokens_B, history_BT,
                                        count_B, keep)
    else:
      logits_BV, cache = _step(params, model, cache, tokens_B)
    tokens_B = choose(logits_BV, _keys(seed, stream_B, i), sampling)
    out_BT = jax.lax.dynamic_update_index_in_dim(out_BT, tokens_B, i, axis=1)
    if keep:
      slots_T = jnp.arange(history_BT.shape[1])[None]
      history_BT = jnp.where(slots_T == count_B[:, None], tokens_B[:, None], history_BT)
    return out_BT, cache, history_BT, count_B + 1

  carry = (out_BT, cache, history_BT, lengths_B + 1)
  return jax.lax.fori_loop(1, T, body, carry)[0]


def _data_axis() -> tuple[jax.sharding.Mesh | None, int]:
  """The active mesh (if any) and its `data` size: rows are padded to a multiple."""
  mesh = jax.sharding.get_mesh()
  if mesh.empty or 'data' not in mesh.shape:
    return None, 1
  return mesh, mesh.shape['data']


def check_prompts(prompts: Sequence[Sequence[int]], max_len: int, vocab_size: int) -> None:
  """One-line ValueErrors for prompts the model cannot take."""
  if not prompts:
    raise ValueError('no prompts given; give at least one')
  for i, prompt in enumerate(prompts):
    if not len(prompt):
      raise ValueError(f'prompt {i} is empty; give at least one token')
    if len(prompt) > max_len:
      raise ValueError(f'prompt {i} has {len(prompt)} tokens, more than the context of'
                       f' model.max_len={max_len}; shorten it')
    ids = np.asarray(prompt)
    if ids.min() < 0 or ids.max() >= vocab_size:
      raise ValueError(f'prompt {i} holds ids outside [0, {vocab_size}); encode it with'
                       " the run's tokenizer")


@dataclasses.dataclass(frozen=True)
class PromptLayout:
  """The static shape of a generate call."""
  rows: int  # prompts x samples, padded to a multiple of the data axis
  prompt_len: int  # the longest prompt
  cache_len: int  # slots: what the longest row needs, at most model.max_len
  keep: int  # tokens a full row restarts from; 0 when no row fills its cache
  shifted: bool  # some row needs more than max_len positions


def plan(lengths: Sequence[int], num_tokens: int, max_len: int, num_samples: int,
         multiple: int) -> PromptLayout:
  """Shapes for prompts of these lengths; a row feeds its prompt and all but its last token."""
  needed = max(lengths) + num_tokens - 1
  shifted = needed > max_len
  rows = -(-len(lengths) * num_samples // multiple) * multiple
  return PromptLayout(rows=rows, prompt_len=max(lengths), cache_len=min(needed, max_len),
              keep=max(max_len // 2, 1) if shifted else 0, shifted=shifted)


def generate(params, model: GPT, prompts: Sequence[Sequence[int]], max_new_tokens: int, *,
             sampling: Sampling = Sampling(), seed: int = 0, num_samples: int = 1) -> Result:
  """`num_samples` continuations of `max_new_tokens` ids for each prompt."""
  cfg = model.cfg
  check_prompts(prompts, cfg.max_len, cfg.real_vocab)
  if max_new_tokens < 0:
    raise ValueError(f'max_new_tokens={max_new_tokens} must be >= 0')
  if num_samples < 1:
    raise ValueError(f'num_samples={num_samples} must be >= 1')
  if not 0 <= seed < 2**32:
    raise ValueError(f'seed={seed} must be in [0, 2**32)')
  if max_new_tokens == 0:
    return Result([[[] for _ in range(num_samples)] for _ in prompts], shifted=False)
  mesh, multiple = _data_axis()
  lengths = [len(p) for p in prompts]
  pl = plan(lengths, max_new_tokens, cfg.max_len, num_samples, multiple)

  prompt_BP = np.zeros((pl.rows, pl.prompt_len), np.int32)
  lengths_B = np.ones((pl.rows,), np.int32)  # padding rows: one token, 0
  stream_B = np.zeros((pl.rows,), np.uint32)
  for r in range(len(prompts) * num_samples):
    prompt = prompts[r // num_samples]
    prompt_BP[r, :len(prompt)] = prompt
    lengths_B[r], stream_B[r] = len(prompt), stream(prompt, r % num_samples)
  batch = (prompt_BP, lengths_B, stream_B)
  if mesh is not None:
    batch = jax.device_put(batch, NamedSharding(mesh, P('data')))
  seed = np.uint32(seed)

  first_B, cache = prefill(params, *batch, seed, model=model, sampling=sampling,
                           cache_len=pl.cache_len)
  out_BT = decode(params, cache, first_B, *batch, seed, model=model, sampling=sampling,
                  num_tokens=max_new_tokens, keep=pl.keep)
  out_BT = np.asarray(jax.device_get(out_BT))
  tokens = [[out_BT[i * num_samples + j].tolist() for j in range(num_samples)]
            for i in range(len(prompts))]
  return Result(tokens, pl.shifted)


def sample(params, model: GPT, prompt_ids: list[int], num_tokens: int, *,
           temperature: float = 0.8, seed: int = 0) -> list[int]:
  """`num_tokens` ids after the prompt (temperature <= 0: greedy).

  A prompt longer than model.max_len is cut to its last max_len tokens.
  """
  prompt = list(prompt_ids)[-model.cfg.max_len:]
  result = generate(params, model, [prompt], num_tokens,
                    sampling=Sampling(temperature=max(temperature, 0.0)), seed=seed)
  return result.tokens[0][0]
