"""Loss, perplexity and bits per character/byte of a run over a whole split.

  python -m jaxlm.evaluate --workdir=runs/gpt_small [--split=validation] \
      [--quantize=none|int8] [--batch_size=64] [--text_files=GLOB]

--text_files evaluates on local text files (one document a file) instead of
the run's own data: what an imported Hugging Face run, whose data settings
are only placeholders, is evaluated on.

Definition. The split is one token stream t_0 .. t_n (jaxlm/data/lm.py: the
documents' tokens, joined as in training). It is cut into consecutive
windows of data.seq_len = L inputs; window w predicts t_{wL+1} .. t_{wL+L}
from the tokens of the window before each, and the last window is shorter.
So every token after the first is predicted exactly once, with 1 to L
tokens of context:

  loss = (1/n) * sum_{i=1..n} -ln p(t_i | t_{L*floor((i-1)/L)} .. t_{i-1})   [nats/token]
  perplexity = exp(loss)
  bits per character (char tokenizer) or per byte (byte tokenizer)
      = loss / ln 2, as a token is one character or one byte;
  bits per byte (sentencepiece) = n * loss / ln 2 / (UTF-8 bytes of the
      decoded t_1 .. t_n).

This is the whole split, unlike the training log's `eval` line: the mean over
train.eval_steps batches of windows spread over the split, a sample of it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from absl import flags  # noqa: E402

from jaxlm.data import dataset as dataset_lib  # noqa: E402
from jaxlm.data import lm as data_lib  # noqa: E402
from jaxlm.data import prepare as prepare_lib  # noqa: E402
from jaxlm.inference import quantize  # noqa: E402
from jaxlm.parallel import sharding  # noqa: E402
from jaxlm.config import ConfigError, DataSource, TokenizerKind  # noqa: E402
from jaxlm.model.gpt import GPT  # noqa: E402
from jaxlm import cli  # noqa: E402
from jaxlm.inference.restore import load_run  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Windows:
  inputs: np.ndarray  # int32 [W, L]
  targets: np.ndarray  # int32 [W, L]
  weights: np.ndarray  # float32 [W, L]: 1 for a real target, 0 past the stream's end


def windows(tokens, seq_len: int, multiple: int = 1) -> Windows:
  """Consecutive windows covering t_1..t_n once; rows padded to a multiple."""
  n = len(tokens) - 1
  if n < 1:
    raise ConfigError('the split holds fewer than 2 tokens; nothing to predict')
  rows = -(-n // seq_len)
  rows = -(-rows // multiple) * multiple
  stream = np.zeros(rows * seq_len + 1, np.int32)
  stream[:n + 1] = tokens
  weights = (np.arange(rows * seq_len) < n).astype(np.float32)
  return Windows(stream[:-1].reshape(rows, seq_len), stream[1:].reshape(rows, seq_len),
                 weights.reshape(rows, seq_len))


@functools.partial(jax.jit, static_argnames='model')
def _nll_sum(params, inputs_BL, targets_BL, weights_BL, *, model: GPT):
  logits_BLV = model.apply({'params': params}, inputs_BL)
  nll_BL = optax.softmax_cross_entropy_with_integer_labels(
      logits_BLV.astype(jnp.float32), targets_BL)
  return jnp.sum(nll_BL * weights_BL)


def total_nll(params, model: GPT, tokens, seq_len: int, batch_size: int) -> tuple[float, int]:
  """Sum over t_1..t_n of -ln p (nats, summed in float64 over batches), and n."""
  mesh = jax.sharding.get_mesh()
  data = 1 if mesh.empty else mesh.shape['data']
  batch_size = -(-batch_size // data) * data
  w = windows(tokens, seq_len, multiple=batch_size)
  put = (lambda x: x) if mesh.empty else functools.partial(
      jax.device_put, device=sharding.batch_sharding(mesh))
  sums = []
  for start in range(0, len(w.inputs), batch_size):
    rows = slice(start, start + batch_size)
    batch = put((w.inputs[rows], w.targets[rows], w.weights[rows]))
    sums.append(_nll_sum(params, *batch, model=model))
  return float(np.sum(np.asarray(jax.device_get(sums), np.float64))), len(tokens) - 1


def metrics(nll: float, n: int, tokenizer, tokens) -> dict:
  """loss, perplexity and bits per character or byte, as the module docstring defines."""
  loss = nll / n
  out = {'tokens': n, 'loss': loss, 'perplexity': math.exp(loss)}
  if tokenizer.kind is TokenizerKind.CHAR:
    out['bits_per_character'] = loss / math.log(2)
  elif tokenizer.kind is TokenizerKind.BYTE:
    out['bits_per_byte'] = loss / math.log(2)
  else:
    num_bytes = len(tokenizer.decode(np.asarray(tokens[1:])).encode('utf-8'))
    out['bits_per_byte'] = nll / math.log(2) / num_bytes
  return out


def evaluate_run(workdir: str, split: str | None = None, *, quantize_to: str = 'none',
                 batch_size: int = 0, text_files: str | None = None) -> dict:
  """The metrics of a run folder's newest readable checkpoint over `split` (default: eval split).

  text_files: a glob of text files to evaluate on instead of the run's data.
  """
  if text_files is not None and split is not None:
    raise ConfigError('give --split (of the run\'s data) or --text_files, not both')
  run = load_run(workdir, quantize_to=quantize_to)
  d = run.config.data
  if text_files is not None:
    d = dataclasses.replace(d, source=DataSource.FILES, train_files=text_files,
                            eval_files=text_files)
  split = split or d.eval_split
  if split not in (d.train_split, d.eval_split) and d.source is DataSource.FILES:
    raise ConfigError(f'--split={split} is neither data.train_split={d.train_split} nor'
                      f' data.eval_split={d.eval_split}; pick one of them')
  if split in (d.train_split, d.eval_split):  # the run's prepared dataset (data/prepare.py)
    folder = prepare_lib.prepared(d, run.tokenizer, log=lambda message: None)
    tokens = np.asarray(dataset_lib.open_split(folder, split))
    data_lib.check_length(d, len(tokens), split)
  else:  # another TFDS split: tokenized here, in memory
    tokens = data_lib.tokenize_split(d, run.tokenizer, split)
  with sharding.activate(run.mesh):
    nll, n = total_nll(run.params, run.model, tokens, d.seq_len, batch_size or d.batch_size)
  out = metrics(nll, n, run.tokenizer, tokens)
  out.update(split=split, step=run.step, param_bytes=quantize.nbytes(run.params))
  return out


def _evaluate(_):
  f = flags.FLAGS
  if f.batch_size < 0:
    raise ConfigError(f'--batch_size={f.batch_size} must be >= 0 (0: data.batch_size)')
  m = evaluate_run(f.workdir, f.split, quantize_to=f.quantize, batch_size=f.batch_size,
                   text_files=f.text_files)
  bits = [f'{k.replace("_", " ")} {m[k]:.4f}' for k in ('bits_per_character', 'bits_per_byte')
          if k in m]
  print(f'{f.workdir} step {m["step"]}, {f.quantize} weights'
        f' ({m["param_bytes"] / 2**20:.2f} MiB), split {m["split"]}: {m["tokens"]:,}'
        ' predicted tokens')
  print(f'loss {m["loss"]:.4f} | perplexity {m["perplexity"]:.4f} | {" | ".join(bits)}')


def _define_flags() -> None:
  flags.DEFINE_string('workdir', None, 'Run folder of a training run.', required=True)
  flags.DEFINE_string('split', None, 'Split to evaluate; default: data.eval_split.')
  flags.DEFINE_string('quantize', 'none', 'none or int8 (weight-only).')
  flags.DEFINE_integer('batch_size', 0, 'Windows per batch; 0: data.batch_size.')
  flags.DEFINE_string('text_files', None, 'Glob of text files to evaluate on instead of the'
                      " run's data (one document a file).")


def main():
  _define_flags()
  cli.run_command(_evaluate)


if __name__ == '__main__':
  main()
