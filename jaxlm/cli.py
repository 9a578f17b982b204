"""What every command shares: the common flags, start-up and the one error path.

Every verb is `python -m jaxlm.<verb> --flag=...` (or `jaxlm <verb> --flag=...`,
see jaxlm/__main__.py) and runs through `run_command(body)`:

  * flags every command takes: multi-host (`--coordinator_address`,
    `--num_processes`, `--process_id`, `--distributed`), JAX's persistent
    `--compilation_cache_dir`, and absl's `-v`/`--verbosity`;
  * one error path: a bad setting, flag, file, folder or checkpoint raises
    `ConfigError`; it prints exactly one line, `error: ...`, and exits 1.
    `--verbosity=1` (or JAXLM_TRACEBACK=1) prints the traceback too.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Callable

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app, flags, logging  # noqa: E402

from jaxlm.config import ConfigError  # noqa: E402

# What a user can cause and fix; anything else is a bug and keeps its traceback.
USER_ERRORS = (ConfigError, FloatingPointError)


def define_common_flags() -> None:
  """The flags of every command (once per process)."""
  if 'compilation_cache_dir' in flags.FLAGS:
    return
  flags.DEFINE_string('coordinator_address', None, 'Multi-host: HOST:PORT of process 0.')
  flags.DEFINE_integer('num_processes', None, 'Multi-host: process count.')
  flags.DEFINE_integer('process_id', None, 'Multi-host: this process, 0-based.')
  flags.DEFINE_bool('distributed', False,
                    'Multi-host with the cluster detected (TPU pod, SLURM, Open MPI, k8s).')
  flags.DEFINE_string(
      'compilation_cache_dir',
      os.environ.get('JAX_COMPILATION_CACHE_DIR') or os.path.join('~', '.cache', 'jaxlm', 'xla'),
      "JAX's persistent compilation cache: a second launch loads compiled steps instead of"
      " compiling them (default: $JAX_COMPILATION_CACHE_DIR if set). '' turns it off.")


def fail(message: str) -> None:
  """The one error line, then exit 1."""
  print(f'error: {message}', file=sys.stderr, flush=True)
  sys.exit(1)


def _show_traceback() -> bool:
  verbosity = flags.FLAGS['verbosity']
  return os.environ.get('JAXLM_TRACEBACK', '') not in ('', '0') or (
      verbosity.present and verbosity.value > 0)


def quiet_libraries() -> None:
  """absl logging at WARNING unless -v is given: Orbax and TFDS log every file at INFO."""
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)


def start() -> bool:
  """Start-up after flags are parsed: logging, compilation cache, multi-host.

  Returns whether this process joined a multi-host run.
  """
  f = flags.FLAGS
  quiet_libraries()
  if f.compilation_cache_dir:
    import jax  # (after the flags: --devices must come first)
    jax.config.update('jax_compilation_cache_dir', os.path.expanduser(f.compilation_cache_dir))
  from jaxlm.parallel import distributed
  return distributed.initialize(f.coordinator_address, f.num_processes, f.process_id,
                                auto=f.distributed)


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, OSError, TypeError, ValueError) as e:
    # ml_collections raises these for a bad --config file or override, chained
    # several deep: one line naming the flag and the fix instead.
    if _wants_traceback(argv):
      traceback.print_exc()
    fail(_flag_error(e, argv))
  return []  # not reached


def _flag_error(e: Exception, argv: list[str]) -> str:
  text = str(e)
  if isinstance(e, (KeyError, AttributeError)) and e.args:  # repr-quoted, escaped newlines
    text = str(e.args[0]).strip().strip("'").replace("\\'", "'").replace('\\n', '\n')
  config = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), None)
  if isinstance(e, OSError) and config is not None and 'config file' in text:
    return _missing_experiment(config)
  if 'Error whilst parsing config file' in text:  # get_config() itself raised
    return (f'--config={config}: get_config() failed: {text.strip().splitlines()[-1].strip()};'
            ' check the variant after ":" and the file (--verbosity=1 shows where)')
  if 'Did you mean' in text or isinstance(e, (KeyError, AttributeError)):
    bad = text.splitlines()[0].strip("'\"")
    override = next((a.split('=', 1)[0] for a in argv
                     if a.startswith('--config.') and bad in a.split('=', 1)[0].split('.')),
                    None)
    hint = text.splitlines()[-1] if 'Did you mean' in text else ''
    hint = hint.replace('Did you mean', 'did you mean').replace(' instead of', ' instead of')
    where = override or f'--config.*.{bad}'
    return f'{where}: unknown setting {bad!r}' + (f'; {hint}' if hint else
                                                 '; see the experiment file for the settings')
  return ' '.join(text.split())


def _missing_experiment(path: str) -> str:
  import difflib
  import pathlib
  file = pathlib.Path(path.split(':', 1)[0])
  if not file.is_file():
    folder = file.parent if str(file.parent) else pathlib.Path('.')
    names = sorted(p.name for p in folder.glob('*.py')) if folder.is_dir() else []
    close = difflib.get_close_matches(file.name, names, n=1)
    hint = f'did you mean {folder / close[0]}?' if close else 'pass an experiment file'
    return f'--config={path}: no such file (from {pathlib.Path.cwd()}); {hint}'
  return (f'--config={path} could not be loaded; run it with --verbosity=1 to see why'
          ' (it must define get_config())')


def _wants_traceback(argv: list[str]) -> bool:
  return os.environ.get('JAXLM_TRACEBACK', '') not in ('', '0') or any(
      a.startswith(('--verbosity=', '-v=')) and a.split('=', 1)[1] not in ('0', '-1')
      for a in argv)


def run_command(body: Callable[[list[str]], None], *, positional: int = 0,
                start_first: bool = True) -> None:
  """Runs a command's body with the common flags and the one error path.

  body gets the positional arguments (at most `positional` of them). With
  start_first=False the body calls start() itself, e.g. after checking a
  config, so that a bad setting is reported before jax is imported.
  """
  define_common_flags()

  def main(argv):
    args = argv[1:]
    if len(args) > positional:
      fail(f'unexpected arguments: {" ".join(args[positional:])}')
    config = flags.FLAGS['config'].value if 'config' in flags.FLAGS else None
    if config is not None and not isinstance(config, str):  # a config file flag loads lazily
      try:
        getattr(config, 'keys')  # a failed load raises on any attribute
      except (AttributeError, KeyError, OSError, TypeError, ValueError) as e:
        if _show_traceback():
          traceback.print_exc()
        fail(_flag_error(e.__cause__ or e, sys.argv))
    try:
      if start_first:
        start()
      body(args)
    except USER_ERRORS as e:
      if _show_traceback():
        traceback.print_exc()
      fail(str(e))

  app.run(main, flags_parser=_parse_flags)
