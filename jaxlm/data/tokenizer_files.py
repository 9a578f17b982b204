"""The files a user gives a tokenizer: a tokenizer.json (and its EOS id), a tiktoken ranks file.

Each is read here, by path (local or any URI etils.epath opens), never
downloaded, and anything wrong with it is one ConfigError line naming
data.tokenizer_file.
"""

from __future__ import annotations

import base64
import json
import os

from etils import epath

from jaxlm import rundir
from jaxlm.config import ConfigError

ENDOFTEXT = '<|endoftext|>'  # GPT-2's end-of-document token, the EOS of bpe and tiktoken
# End-of-document tokens by which a user's tokenizer.json gives its EOS id, in this order:
# GPT-2/Qwen, Llama 3, Llama 2/Mistral, Gemma, then chat models' end-of-turn tokens.
EOS_TOKENS = (ENDOFTEXT, '<|end_of_text|>', '</s>', '<eos>', '<|im_end|>', '<|eot_id|>')


def eos_id_of(tok, path: str) -> int:
  """The EOS id of a user's tokenizer.json (a tokenizers.Tokenizer read from path).

  In this order: the eos_token_id of a generation_config.json or config.json
  beside it (the first, if a list), the eos_token of a tokenizer_config.json
  beside it, the first of EOS_TOKENS in the vocabulary; else one ConfigError line.
  """
  folder = epath.Path(path).parent
  size = tok.get_vocab_size(with_added_tokens=True)
  for name in ('generation_config.json', 'config.json'):
    eos = json_beside(folder / name).get('eos_token_id')
    eos = eos[0] if isinstance(eos, list) and eos else eos
    if isinstance(eos, int) and 0 <= eos < size:
      return eos
  named = json_beside(folder / 'tokenizer_config.json').get('eos_token')
  named = named.get('content') if isinstance(named, dict) else named
  for token in ([named] if isinstance(named, str) else []) + list(EOS_TOKENS):
    if tok.token_to_id(token) is not None:
      return tok.token_to_id(token)
  raise ConfigError(f'data.tokenizer_file={path} has none of the end-of-document tokens'
                    f' {" ".join(EOS_TOKENS)} and names no eos_token_id beside it; write'
                    f' {{"eos_token_id": ID}} to {folder / "generation_config.json"}')


def json_beside(file: epath.Path) -> dict:
  """A JSON object file next to a tokenizer, or {} when it is absent or not one."""
  try:
    value = json.loads(file.read_text())
  except (OSError, ValueError):
    return {}
  return value if isinstance(value, dict) else {}


def read_setting_file(setting: str, path: str, what: str) -> bytes:
  """The bytes of a file a setting names; a missing or unreadable one is one ConfigError line."""
  try:
    return epath.Path(path).read_bytes()
  except FileNotFoundError:
    where = '' if os.path.isabs(path) or not rundir.is_local(path) else f' (from {os.getcwd()})'
    raise ConfigError(f'{setting}: no such file{where}; pass the path of {what}') from None
  except IsADirectoryError:
    raise ConfigError(f'{setting} is a folder; pass the path of {what} in it') from None
  except OSError as e:
    raise ConfigError(f'{setting} cannot be read ({e.strerror or e}); pass the path of'
                      f' {what} that you can read') from None


def parse_ranks(data: bytes, source: str) -> dict[bytes, int]:
  """A tiktoken ranks file's `base64token rank` lines; anything else is one ConfigError line."""
  fix = "pass a tiktoken ranks file, such as GPT-2's r50k_base.tiktoken"
  ranks = {}
  for number, line in enumerate(data.splitlines(), 1):
    if not line.strip():
      continue
    try:
      token, rank = line.split()
      ranks[base64.b64decode(token, validate=True)] = int(rank)
    except ValueError:  # (binascii.Error is one)
      raise ConfigError(f'{source}: line {number} is not `base64token rank`'
                        f' ({line[:40].decode("utf-8", "replace")!r}); {fix}') from None
  if not ranks:
    raise ConfigError(f'{source} is empty; {fix}')
  missing = 256 - sum(len(token) == 1 for token in ranks)
  if missing:
    raise ConfigError(f'{source} lacks {missing} of the 256 single bytes every byte-level'
                      f' vocabulary has; {fix}')
  values = set(ranks.values())
  if len(values) < len(ranks) or min(values) < 0 or max(values) >= 2 * len(ranks):
    raise ConfigError(f'{source}: ranks must be distinct and run from 0 to about the number'
                      f' of tokens ({len(ranks)}), not {min(values)}..{max(values)}; {fix}')
  return ranks
