"""EleutherAI's lm-eval harness (0.4.x) on a jaxlm run folder: the harness's model type `jaxlm`.

  import jaxlm, lm_eval
  results = lm_eval.simple_evaluate(model='jaxlm', model_args='workdir=runs/imported',
                                    tasks=['hellaswag'])

`import jaxlm` registers the name `jaxlm` with an installed harness as a lazy
placeholder for `JaxLM` here (jaxlm/__init__.py), so neither this module nor
jax is imported until the harness builds the model. `python -m jaxlm.lm_eval`
is the command line (jaxlm/lm_eval.py).

`JaxLM` is a `TemplateLM`, the base of the harness's own `hf` backend, so a
request is tokenized exactly as there: a (context, continuation) pair is
encode(context + continuation) split after encode(context), an empty context
is the prefix token, and loglikelihood_rolling cuts a text into the
harness's disjoint windows of model.max_len. Scores come from `Model.logits`
(batches placed on the run's mesh by jaxlm/inference/model.py) and
log-softmax in float32; `generate_until` is `Model.generate` (the KV-cache
path, greedy unless the task samples), cut at the task's stop strings and
the end-of-text token. Too long a request keeps its last tokens, as the `hf`
backend's does.

Model arguments (model_args='workdir=RUN,batch_size=16,...'):
  workdir         the run folder (trained or imported); required
  step, dtype     as jaxlm.load: a checkpoint step, the compute dtype
  batch_size      requests per Model.logits / Model.generate call (default 8;
                  'auto' is the default); host memory is batch x max_len x
                  vocab x 4 bytes of logits
  add_bos_token   Hugging Face tokenizers only: None (default) adds what the
                  tokenizer.json's post-processor adds, as transformers does;
                  True/False force it on or off (the hf backend's argument)
  prefix_token_id the token before a text with no context (default: the
                  import's bos_token_id, else the end-of-text token)
  max_gen_toks    generate_until's default when a task gives none (256)
  seed            the sampling seed of tasks that sample (default 0)
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import Collator
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from jaxlm import rundir
from jaxlm.config import ConfigError, TokenizerKind
from jaxlm.inference import model as model_lib
from jaxlm.inference import restore

log = logging.getLogger(__name__)

DEFAULT_BATCH = 8
# Sampling settings Model.generate takes; others a task may give are ignored with a warning.
SAMPLING_KEYS = ('do_sample', 'temperature', 'top_k', 'top_p')
MAX_TOKENS_KEYS = ('max_gen_toks', 'max_new_tokens', 'max_tokens')  # the harness's priority


class TextCodec:
  """Text <-> ids as the harness's `hf` backend sees them, over a run's tokenizer.

  A Hugging Face tokenizer.json is read again with its special tokens (jaxlm's
  own tokenizer drops them): encode adds what its post-processor adds (a BOS)
  unless told not to, and decode skips special tokens, as transformers' fast
  tokenizers do. A tokenizer jaxlm trained has no special tokens.
  """

  def __init__(self, tokenizer, add_bos_token: bool | None):
    self.tokenizer = tokenizer
    self._hf = None
    if tokenizer.kind is TokenizerKind.HUGGINGFACE:
      import tokenizers
      self._hf = tokenizers.Tokenizer.from_str(tokenizer.tokenizer_json.decode('utf-8'))
    elif add_bos_token:
      raise ConfigError(f'add_bos_token=True but the run\'s {tokenizer.kind.value} tokenizer'
                        ' has no BOS token; leave add_bos_token out')
    self.add_bos_token = add_bos_token

  @property
  def has_special_tokens(self) -> bool:
    return self._hf is not None

  def encode(self, text: str, add_special_tokens: bool | None = None) -> list[int]:
    if self._hf is None:
      return [int(i) for i in self.tokenizer.encode(text)]
    special = add_special_tokens if add_special_tokens is not None else (
        self.add_bos_token if self.add_bos_token is not None else True)
    return self._hf.encode(text, add_special_tokens=special).ids

  def decode(self, ids: Sequence[int]) -> str:
    if self._hf is None:
      return self.tokenizer.decode(list(ids))
    return self._hf.decode(list(ids), skip_special_tokens=True)

  def token_text(self, token: int) -> str:
    """One token's text, special or not (the end-of-text stop string)."""
    if self._hf is None:
      return self.tokenizer.decode([token])
    return self._hf.decode([token], skip_special_tokens=False)


def score_window(context_ids: list[int], continuation_ids: list[int], max_len: int
                 ) -> list[int]:
  """The model input of a request: context + continuation less its last token, left-truncated
  to max_len as the hf backend does. Its last len(continuation_ids) positions score it."""
  if not continuation_ids:
    raise ConfigError('a request has an empty continuation; the task must give text to score')
  if len(continuation_ids) > max_len:
    raise ConfigError(f'a continuation of {len(continuation_ids)} tokens is longer than the'
                      f' context of model.max_len={max_len}; it cannot be scored')
  return (list(context_ids) + list(continuation_ids))[-(max_len + 1):][:-1]


def continuation_scores(logits_TV: np.ndarray, continuation_ids: list[int]
                        ) -> tuple[float, bool]:
  """(sum of log p of the continuation, whether greedy decoding gives it) from the logits of
  the positions that predict it, [len(continuation_ids), V]."""
  x_TV = logits_TV.astype(np.float32)
  x_TV = x_TV - x_TV.max(axis=-1, keepdims=True)
  logp_TV = x_TV - np.log(np.exp(x_TV).sum(axis=-1, keepdims=True))
  ids = np.asarray(continuation_ids)
  picked_T = logp_TV[np.arange(len(ids)), ids]
  return float(picked_T.sum()), bool((logp_TV.argmax(axis=-1) == ids).all())


def stop_at(text: str, until: Sequence[str]) -> str:
  """The text before the first of each stop string, in turn (the hf backend's cut)."""
  for term in until:
    if term:
      text = text.split(term)[0]
  return text


def through_first(ids: list[int], token: int | None) -> list[int]:
  """ids up to and including the first `token`: where the hf backend's generate stops."""
  return ids[:ids.index(token) + 1] if token is not None and token in ids else ids


def generation_settings(gen_kwargs: dict, default_max: int) -> tuple[list[str], int, dict]:
  """(stop strings, max new tokens, Model.generate's sampling keywords) of a task's kwargs."""
  kwargs = dict(gen_kwargs)
  until = kwargs.pop('until', None) or []
  until = [until] if isinstance(until, str) else list(until)
  given = [kwargs.pop(k) for k in MAX_TOKENS_KEYS if kwargs.get(k) is not None]
  for k in MAX_TOKENS_KEYS:
    kwargs.pop(k, None)
  max_new = int(given[0]) if given else default_max
  temperature = float(kwargs.get('temperature') or 0.0)
  do_sample = kwargs.get('do_sample')
  do_sample = temperature > 0 if do_sample is None else bool(do_sample)
  sampling = {'temperature': temperature if do_sample else 0.0}
  if do_sample:
    sampling.update(top_k=int(kwargs.get('top_k') or 0), top_p=float(kwargs.get('top_p') or 1.0))
  ignored = sorted(k for k in kwargs if k not in SAMPLING_KEYS)
  if ignored:
    log.warning('jaxlm: generation settings %s are not supported and are ignored', ignored)
  return until, max_new, sampling


def _prefix_token(workdir: str, tokenizer, codec: TextCodec) -> int:
  """The token a text with no context follows: an import's BOS, else the end-of-text token
  (the document separator jaxlm trains with: EOS, or a newline for char and byte tokens)."""
  source = rundir.read_hf_source(workdir) or {}
  for part in ('generation_config', 'config'):
    bos = (source.get(part) or {}).get('bos_token_id')
    bos = bos[0] if isinstance(bos, list) and bos else bos
    if isinstance(bos, int) and 0 <= bos < tokenizer.vocab_size:
      return bos
  return _end_of_text(tokenizer, codec)


def _end_of_text(tokenizer, codec: TextCodec) -> int:
  if tokenizer.eos_id is not None:
    return int(tokenizer.eos_id)
  return codec.encode('\n', add_special_tokens=False)[-1]


def check_run(workdir: str) -> None:
  """One-line errors for a folder the harness cannot score, before anything is restored."""
  restore.read_config(workdir)  # a missing folder, or not a language-model run
  if not rundir.has_tokenizer(workdir):
    raise ConfigError(f'--workdir={workdir} has no tokenizer (an import from a folder without'
                      ' tokenizer.json); lm-eval tasks are text: import again from a Hugging'
                      ' Face folder that has tokenizer.json')


def _batch_size(value) -> int:
  if value in (None, 'auto') or (isinstance(value, str) and value.startswith('auto')):
    return DEFAULT_BATCH
  try:
    size = int(value)
  except (TypeError, ValueError):
    size = 0
  if size < 1:
    raise ConfigError(f'batch_size={value!r} must be a positive integer (or auto: '
                      f'{DEFAULT_BATCH})')
  return size


@register_model('jaxlm')
class JaxLM(TemplateLM):
  """A jaxlm run folder as an lm-eval model (the module docstring lists the arguments)."""

  def __init__(self, workdir: str | None = None, step: int | None = None,
               dtype: str | None = None, batch_size: int | str | None = None,
               add_bos_token: bool | None = None, prefix_token_id: int | None = None,
               max_gen_toks: int = 256, seed: int = 0, max_batch_size: int | None = None,
               device: str | None = None, **unknown):
    super().__init__()
    if unknown:
      raise ConfigError(f'model_args {", ".join(sorted(unknown))}: not an argument of the'
                        ' jaxlm model; it takes workdir, step, dtype, batch_size,'
                        ' add_bos_token, prefix_token_id, max_gen_toks, seed')
    if not workdir:
      raise ConfigError("model_args needs workdir=RUN, a jaxlm run folder")
    workdir = str(workdir)
    check_run(workdir)
    if device is not None:
      log.info('jaxlm: device=%s is ignored; the run goes on its mesh of the local devices',
               device)
    self.batch_size = _batch_size(batch_size)
    self.model = model_lib.load_model(workdir, step=None if step is None else int(step),
                                      dtype=dtype)
    self.codec = TextCodec(self.model.tokenizer, add_bos_token)
    self.workdir = workdir
    self._prefix = (int(prefix_token_id) if prefix_token_id is not None
                    else _prefix_token(workdir, self.model.tokenizer, self.codec))
    self._eot = _end_of_text(self.model.tokenizer, self.codec)
    self.max_gen_toks = int(max_gen_toks)
    self.seed = int(seed)

  @property
  def eot_token_id(self) -> int:
    return self._eot

  @property
  def prefix_token_id(self) -> int:
    return self._prefix

  @property
  def max_length(self) -> int:
    return self.model.config.model.max_len

  @property
  def tokenizer_name(self) -> str:
    return f'jaxlm-{self.model.tokenizer.kind.value}'

  def get_model_info(self) -> dict:
    """What simple_evaluate records in its results' config."""
    m = self.model.config.model
    return {'workdir': self.workdir, 'step': self.model.step, 'dtype': m.dtype,
            'max_length': m.max_len, 'batch_size_per_call': self.batch_size}

  def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs
                 ) -> list[int]:
    if (add_special_tokens is None and self.codec.has_special_tokens
        and string.startswith(self.codec.token_text(self._prefix))):
      add_special_tokens = False  # the text brings its BOS (the hf backend's check)
    return self.codec.encode(string, add_special_tokens)

  def _logits(self, rows: list[list[int]]) -> np.ndarray:
    """Model.logits of right-padded rows, padded to batch_size rows (one shape per length
    bucket, so each compiles once)."""
    tokens_BT = np.zeros((max(self.batch_size, len(rows)), max(map(len, rows))), np.int32)
    for b, row in enumerate(rows):
      tokens_BT[b, :len(row)] = row
    return self.model.logits(tokens_BT)

  def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs
                            ) -> list[tuple[float, bool]]:
    """(log p, is greedy) of each (strings, context ids, continuation ids), longest first."""
    order = Collator(requests, sort_fn=lambda r: (-len(r[1] + r[2]), tuple(r[1] + r[2])))
    out = []
    bar = tqdm(total=len(requests), disable=disable_tqdm, desc='jaxlm loglikelihood')
    for chunk in order.get_batched(n=self.batch_size):
      inputs = [score_window(ctx, cont, self.max_length) for _, ctx, cont in chunk]
      logits_BTV = self._logits(inputs)
      for b, ((strings, _, cont), row) in enumerate(zip(chunk, inputs)):
        answer = continuation_scores(logits_BTV[b, len(row) - len(cont):len(row)], cont)
        out.append(answer)
        if strings is not None:
          self.cache_hook.add_partial('loglikelihood', strings, answer)
        bar.update(1)
    bar.close()
    return order.get_original(out)

  def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
    """log p of each whole text, over the harness's disjoint windows of max_len tokens."""
    windows, owner = [], []
    for i, (text,) in enumerate(r.args for r in requests):
      for ctx, pred in map(make_disjoint_window, get_rolling_token_windows(
          token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
          max_seq_len=self.max_length, context_len=1)):
        windows.append((None, ctx, pred))
        owner.append(i)
    scores = self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)
    totals = [0.0] * len(requests)
    for i, (logp, _) in zip(owner, scores):
      totals[i] += logp
    for request, total in zip(requests, totals):
      self.cache_hook.add_partial('loglikelihood_rolling', request.args, total)
    return totals

  def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
    """Each context's continuation by Model.generate, cut at the stop strings and EOS."""
    args = [r.args for r in requests]
    order = Collator(args, sort_fn=lambda a: (-len(self.tok_encode(a[0])), a[0]),
                     group_by='gen_kwargs', group_fn=lambda a: a[1])
    eos = self.model.tokenizer.eos_id
    out = []
    bar = tqdm(total=len(requests), disable=disable_tqdm, desc='jaxlm generate_until')
    for chunk in order.get_batched(n=self.batch_size):
      contexts, kwargs = zip(*chunk)
      until, max_new, sampling = generation_settings(kwargs[0], self.max_gen_toks)
      if eos is not None and self.codec.token_text(eos) not in until:
        until.append(self.codec.token_text(eos))
      max_new = self._fit_new_tokens(max_new)
      prompts = [self.tok_encode(c)[-(self.max_length - max_new):] for c in contexts]
      new = self.model.generate(prompts, max_new, seed=self.seed, **sampling)
      for context, gen_kwargs, ids in zip(contexts, kwargs, new):
        text = stop_at(self.codec.decode(through_first(ids, eos)), until)
        out.append(text)
        self.cache_hook.add_partial('generate_until', (context, gen_kwargs), text)
        bar.update(1)
    bar.close()
    return order.get_original(out)

  def _fit_new_tokens(self, max_new: int) -> int:
    """New tokens that leave a token of context (the hf backend fails where this caps)."""
    if max_new < 1:
      raise ConfigError(f'max_gen_toks={max_new} must be >= 1')
    if max_new >= self.max_length:
      log.warning('jaxlm: max_gen_toks=%d does not fit the context of model.max_len=%d;'
                  ' generating %d', max_new, self.max_length, self.max_length - 1)
      return self.max_length - 1
    return max_new
