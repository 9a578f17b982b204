"""`jaxlm.load`'s Model: a restored run's next-token logits and generation, from Python.

  model = jaxlm.load('runs/gpt_small')
  logits_BTV = model.logits([[3, 1, 4, 1, 5]])       # numpy float32 [1, 5, vocab]
  ids = model.generate(['ROMEO:'], 40, temperature=0.8, seed=1)
  print(model.tokenizer.decode(ids[0]))

The vocabulary is the real one (the tokenizer's, or an import's HF size):
logits have no columns for the rows model.vocab_size pads it with.
Generation is the KV-cache path of `python -m jaxlm.sample`
(jaxlm/inference/generate.py): the same prompt, settings and seed give the
same ids as that command.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxlm.config import Config, ConfigError
from jaxlm.data.tokenizers import Tokenizer
from jaxlm.inference import generate as generate_lib
from jaxlm.inference import restore
from jaxlm.model.gpt import GPT
from jaxlm.parallel import sharding


@functools.partial(jax.jit, static_argnames=('model', 'vocab'))
def _logits(params, tokens_BT, *, model: GPT, vocab: int):
  logits_BTV = model.apply({'params': params}, tokens_BT)
  return logits_BTV[..., :vocab].astype(jnp.float32)


def _bucket(length: int, max_len: int) -> int:
  """The padded length a call compiles for: the next power of two, at most max_len."""
  return min(max_len, 1 << max(length - 1, 0).bit_length())


class Model:
  """A trained or imported run restored onto the local devices."""

  def __init__(self, run: restore.Run):
    self._run = run

  @property
  def config(self) -> Config:
    """The run's settings (config.json)."""
    return self._run.config

  @property
  def tokenizer(self) -> Tokenizer | None:
    """The run's tokenizer; None for a run without one (an imported GPT-2)."""
    return self._run.tokenizer

  @property
  def step(self) -> int:
    """The checkpoint's step."""
    return self._run.step

  @property
  def params(self) -> dict:
    """The parameters: a tree of float32 jax arrays, each laid out over `mesh`."""
    return self._run.params

  @property
  def mesh(self) -> jax.sharding.Mesh:
    """The devices the parameters live on, by axis (data, model, pipeline)."""
    return self._run.mesh

  @property
  def vocab_size(self) -> int:
    """The real vocabulary: the tokenizer's size, else the model's (an import's HF size)."""
    if self._run.tokenizer is not None:
      return self._run.tokenizer.vocab_size
    return self._run.config.model.real_vocab

  def _check_ids(self, ids: np.ndarray, what: str) -> None:
    if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
      raise ConfigError(f'{what} holds ids outside [0, {self.vocab_size}) (the vocabulary);'
                        " encode text with the run's tokenizer")

  def logits(self, tokens_BT) -> np.ndarray:
    """Next-token logits, numpy float32 [B, T, vocab_size], for int token ids [B, T].

    Position t scores the token after tokens_BT[:, :t + 1]. Any batch size:
    rows go in batches of data.batch_size over the devices, padded.
    """
    tokens_BT = np.asarray(tokens_BT)
    if tokens_BT.ndim != 2 or not (np.issubdtype(tokens_BT.dtype, np.integer)
                                   or tokens_BT.size == 0):
      raise ConfigError(f'tokens_BT has shape {tokens_BT.shape} and dtype {tokens_BT.dtype};'
                        ' pass int token ids shaped [batch, time]')
    B, T = tokens_BT.shape
    max_len = self.config.model.max_len
    if not B or not T:
      raise ConfigError(f'tokens_BT has shape {tokens_BT.shape}; give at least one token')
    if T > max_len:
      raise ConfigError(f'tokens_BT has {T} tokens a row, more than the context of'
                        f' model.max_len={max_len}; pass at most {max_len}')
    self._check_ids(tokens_BT, 'tokens_BT')
    run = self._run
    data = run.mesh.shape['data']
    rows = -(-min(B, max(self.config.data.batch_size, 1)) // data) * data
    width = _bucket(T, max_len)
    out_BTV = np.empty((B, T, self.vocab_size), np.float32)
    with sharding.activate(run.mesh):
      for start in range(0, B, rows):
        chunk = tokens_BT[start:start + rows]
        padded_BT = np.zeros((rows, width), np.int32)
        padded_BT[:len(chunk), :T] = chunk
        x_BT = jax.device_put(padded_BT, sharding.batch_sharding(run.mesh))
        y_BTV = _logits(run.params, x_BT, model=run.model, vocab=self.vocab_size)
        out_BTV[start:start + len(chunk)] = np.asarray(jax.device_get(y_BTV))[:len(chunk), :T]
    return out_BTV

  def encode(self, prompts: Sequence[str | Sequence[int]]) -> list[list[int]]:
    """Token ids of each prompt: strings through the tokenizer, id lists as they are."""
    if isinstance(prompts, str):
      raise ConfigError(f'prompts={prompts[:30]!r} is one string; pass a list of prompts,'
                        f' e.g. [{prompts[:30]!r}]')
    out = []
    for i, prompt in enumerate(prompts):
      if isinstance(prompt, str):
        if self.tokenizer is None:
          raise ConfigError(f'prompt {i} is text but the run has no tokenizer (an imported'
                            ' GPT-2); pass token ids, e.g. from the GPT-2 tokenizer of'
                            ' transformers')
        ids = [int(t) for t in self.tokenizer.encode(prompt)]
      else:
        ids = [int(t) for t in prompt]
      self._check_ids(np.asarray(ids, np.int64), f'prompt {i}')
      out.append(ids)
    return out

  def generate(self, prompts: Sequence[str | Sequence[int]], max_new_tokens: int, *,
               temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
               seed: int = 0) -> list[list[int]]:
    """max_new_tokens new ids after each prompt (text, or a list of ids), the prompts not included.

    Temperature 0 is greedy; otherwise top_k (0: all) and top_p (1: all)
    filter the logits before a draw. A (prompt, settings, seed) always gives
    the same ids, in any batch. Nothing is cut at an end-of-document id.
    """
    ids = self.encode(prompts)
    if max_new_tokens < 0:
      raise ConfigError(f'max_new_tokens={max_new_tokens} must be >= 0')
    if not 0 <= seed < 2**32:
      raise ConfigError(f'seed={seed} must be in [0, 2**32)')
    try:  # both name the argument first
      sampling = generate_lib.Sampling(temperature, top_k, top_p)
      generate_lib.check_prompts(ids, self.config.model.max_len, self.vocab_size)
    except ValueError as e:
      raise ConfigError(str(e)) from None
    with sharding.activate(self._run.mesh):
      result = generate_lib.generate(self._run.params, self._run.model, ids, max_new_tokens,
                                     sampling=sampling, seed=seed)
    return [samples[0] for samples in result.tokens]


def load_model(workdir: str, *, step: int | None = None, dtype: str | None = None) -> Model:
  """The run folder's newest readable checkpoint (or `step`) on the local devices."""
  return Model(restore.load_run(workdir, step=step, dtype=dtype, tokenizer_required=False))
