"""Causal language modelling (pretraining): next-token cross-entropy on token windows.

A batch is {'inputs', 'targets'} int32 [B, L]; packed rows
(jaxlm/data/packing.py) add 'segment_ids' and 'positions' (passed to the
model) and float32 'weights' (1 on real targets, 0 on padding), and their
loss is the weighted mean of the per-token cross-entropy.

Dimension key as in jaxlm/model/gpt.py.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxlm import config as config_lib
from jaxlm import rundir
from jaxlm.config import Config
from jaxlm.data import dataset as dataset_lib
from jaxlm.data import lm as data_lib
from jaxlm.data import packing
from jaxlm.data import prepare as prepare_lib
from jaxlm.data import tokenizers
from jaxlm.inference import generate
from jaxlm.model.gpt import GPT
from jaxlm.tasks.base import Task
from jaxlm.training import flops as flops_lib
from jaxlm.training.metrics import log
from jaxlm.training.steps import Objective


def token_cross_entropy(logits_BLV, targets_BL) -> jax.Array:
  """Per-token next-token cross-entropy [B, L], accumulated in float32.

  Written as logsumexp minus the target's logit so that XLA fuses the upcast
  into the reductions: float32 logits are never stored (with bf16 logits over
  GPT-2's 50k vocabulary that is 6.6 GB of memory traffic per pass saved at
  32k tokens a step), and the backward writes bf16 softmax - onehot directly.
  """
  max_BL = jax.lax.stop_gradient(jnp.max(logits_BLV, axis=-1)).astype(jnp.float32)
  shifted_BLV = logits_BLV.astype(jnp.float32) - max_BL[..., None]
  lse_BL = jnp.log(jnp.sum(jnp.exp(shifted_BLV), axis=-1)) + max_BL
  target_BL = jnp.take_along_axis(logits_BLV, targets_BL[..., None], axis=-1)[..., 0]
  return lse_BL - target_BL.astype(jnp.float32)


def cross_entropy(logits_BLV, targets_BL) -> jax.Array:
  """Mean next-token cross-entropy (`token_cross_entropy`), in float32."""
  return jnp.mean(token_cross_entropy(logits_BLV, targets_BL))


def weighted_cross_entropy(logits_BLV, targets_BL, weights_BL) -> jax.Array:
  """sum(w * nll) / sum(w): the mean over the targets of weight 1 (0 if there are none)."""
  weights_BL = weights_BL.astype(jnp.float32)
  total = jnp.sum(weights_BL)
  nll_sum = jnp.sum(weights_BL * token_cross_entropy(logits_BLV, targets_BL))
  return nll_sum / jnp.where(total > 0, total, 1.0)


def next_token_loss(model: GPT, params, batch, rng, train: bool):
  """(mean cross-entropy of batch['targets'] given batch['inputs'], no extra metrics).

  With batch['weights'] (packed rows): the weighted mean, the model given
  batch['segment_ids'] and batch['positions'] where present.
  """
  deterministic = not train or model.cfg.dropout == 0.0
  rngs = {} if deterministic else {'dropout': rng}
  packed = {f'{key}_BL': batch[key] for key in ('segment_ids', 'positions') if key in batch}
  logits_BLV = model.apply({'params': params}, batch['inputs'],
                           deterministic=deterministic, rngs=rngs, **packed)
  if 'weights' in batch:
    return weighted_cross_entropy(logits_BLV, batch['targets'], batch['weights']), {}
  return cross_entropy(logits_BLV, batch['targets']), {}


def eval_loss(model: GPT, params, batch) -> jax.Array:
  """The batch's loss as next_token_loss computes it, without dropout."""
  return next_token_loss(model, params, batch, None, False)[0]


def eval_loss_and_weight(model: GPT, params, batch) -> jax.Array:
  """[the batch's mean loss, its targets' weight]: eval weighs each target token alike.

  Unpacked batches all weigh B x L; packed rows weigh what their documents fill.
  """
  if 'weights' not in batch:
    return jnp.stack([eval_loss(model, params, batch), jnp.float32(batch['targets'].size)])
  return jnp.stack([eval_loss(model, params, batch),
                    jnp.sum(batch['weights'].astype(jnp.float32))])


def weighted_mean(outputs: list) -> float:
  """The per-token mean of eval_loss_and_weight's outputs over batches."""
  loss_weight_N2 = np.asarray(outputs, np.float64).reshape(-1, 2)
  total = loss_weight_N2[:, 1].sum()
  return float((loss_weight_N2[:, 0] * loss_weight_N2[:, 1]).sum() / (total if total else 1.0))


def lm_objective(c: Config, stack=None) -> Objective:
  """The GPT and its next-token loss."""
  model = GPT(c.model) if stack is None else GPT(c.model, stack=stack)
  example = (jax.ShapeDtypeStruct((1, c.data.seq_len), jnp.int32),)
  return Objective(model, example, next_token_loss, eval_loss_and_weight)


class LanguageModelling(Task):
  """Pretraining on a token stream from TFDS or text files."""

  def __init__(self, c: Config):
    self.config = c

  def prepare(self, workdir: str, resuming: bool) -> Config:
    c, d = self.config, self.config.data
    # A prepared dataset folder (data/prepare.py): data.dataset_dir, or the
    # cache folder of this input's fingerprint, so a fixed input never meets
    # stale tokens and a second run on the same input tokenizes nothing.
    # Resuming, the data must be tokenized with the run's own tokenizer.
    given = tokenizers.saved_tokenizer(d, workdir) if resuming else None
    folder = prepare_lib.prepared(d, given, log=log)
    manifest = dataset_lib.read_manifest(folder)
    self.tokenizer = given or tokenizers.load_tokenizer(folder)
    c = self.config = config_lib.resolve_vocab(c, self.tokenizer.vocab_size)
    self._train_tokens = dataset_lib.open_split(folder, d.train_split, manifest)
    self._eval_tokens = dataset_lib.open_split(folder, d.eval_split, manifest)
    for split, tokens in ((d.train_split, self._train_tokens),
                          (d.eval_split, self._eval_tokens)):
      data_lib.check_length(d, len(tokens), split)
    if d.pack:  # whole documents in rows (data/packing.py), from the dataset's index
      self._train_offsets = self._train_tokens.doc_offsets()
      self._eval_offsets = self._eval_tokens.doc_offsets()
    self.tokens_per_step = d.batch_size * d.seq_len
    self.examples_per_step = d.batch_size
    self.flops_per_token = flops_lib.flops_per_token(c.model, d.seq_len)
    return c

  def objective(self, stack=None) -> Objective:
    return lm_objective(self.config, stack)

  def describe(self, n_params: int) -> str:
    return f'model: {n_params / 1e6:.2f}M parameters, vocab {self.config.model.vocab_size}'

  def train_batch(self, step, process_index, process_count):
    d, t = self.config.data, self.config.train
    if d.pack:
      return packing.packed_train_batch(
          self._train_tokens, self._train_offsets, step, batch_size=d.batch_size,
          seq_len=d.seq_len, seed=t.seed, process_index=process_index,
          process_count=process_count)
    return data_lib.train_batch(self._train_tokens, step, batch_size=d.batch_size,
                                seq_len=d.seq_len, seed=t.seed,
                                process_index=process_index, process_count=process_count)

  def eval_batches(self, process_index, process_count):
    d = self.config.data
    if d.pack:
      return packing.packed_eval_batches(
          self._eval_tokens, self._eval_offsets, batch_size=d.batch_size, seq_len=d.seq_len,
          num_batches=self.config.train.eval_steps, process_index=process_index,
          process_count=process_count)
    return data_lib.eval_batches(self._eval_tokens, batch_size=d.batch_size, seq_len=d.seq_len,
                                 num_batches=self.config.train.eval_steps,
                                 process_index=process_index, process_count=process_count)

  def eval_metrics(self, outputs):
    loss = weighted_mean(outputs)
    return {'eval_loss': loss, 'eval_perplexity': math.exp(loss)}

  def eval_line(self, m):
    return f'loss {m["eval_loss"]:.4f} | perplexity {m["eval_perplexity"]:.2f}'

  def finish(self, params, workdir, result):
    t = self.config.train
    if not (t.sample_tokens > 0 and t.sample_prompt):
      return
    prompt = self.tokenizer.encode(t.sample_prompt)
    ids = generate.sample(params, GPT(self.config.model), list(prompt), t.sample_tokens,
                          temperature=t.sample_temperature, seed=t.seed)
    text = tokenizers.continue_text(self.tokenizer, t.sample_prompt, prompt, ids)
    log('sample:\n' + text)
    if jax.process_index() == 0:
      rundir.write_sample(workdir, text)
    result['sample'] = text
