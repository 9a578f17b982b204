"""`python -m MODULE ARGS` for tests, each in a fresh process forked from a warm one.

Most command-line tests check a line and an exit code, and a cold start
spends about 2.5 s of CPU importing jax, flax, optax and orbax before the
command runs. `run_module` sends the command to a server process (one per
test process) that has imported those libraries, and nothing of jaxlm; the
server forks, and the child runs the module as `python -m` would
(`runpy.run_module(..., run_name='__main__', alter_sys=True)`, the working
directory first on sys.path) with its own environment, working directory,
stdout and stderr. The command is still a separate process with its own exit
code: only the imports are shared, copy-on-write. jax's backend is not
started in the server, so XLA_FLAGS still apply in the child; a command whose
JAX_* or XLA_* variables differ from the server's runs cold, with subprocess.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time

PRELOAD = ('numpy', 'jax', 'jax.numpy', 'flax.linen', 'optax', 'orbax.checkpoint',
           'ml_collections', 'etils.epath', 'absl.app', 'absl.flags', 'tokenizers',
           'safetensors.numpy')
_server = None


def _same_jax_env(env: dict) -> bool:
  keys = {k for k in (*env, *os.environ) if k.startswith(('JAX_', 'XLA_'))}
  return all(env.get(k) == os.environ.get(k) for k in keys)


def run_module(args: list[str], cwd, timeout: float = 300, env: dict | None = None
               ) -> subprocess.CompletedProcess:
  """What `subprocess.run([python, '-m', *args], cwd=cwd, capture_output=True, text=True)` gives."""
  env = dict(os.environ if env is None else env)
  if not _same_jax_env(env):
    return subprocess.run([sys.executable, '-m', *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)
  global _server
  if _server is None or _server.poll() is not None:
    _server = subprocess.Popen([sys.executable, '-c', _SERVER], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, bufsize=0,
                               cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    atexit.register(_server.kill)
  with tempfile.TemporaryDirectory() as tmp:
    out, err = os.path.join(tmp, 'out'), os.path.join(tmp, 'err')
    request = {'args': args, 'cwd': str(cwd), 'env': env, 'out': out, 'err': err}
    _server.stdin.write((json.dumps(request) + '\n').encode())
    pid = int(_line(None))
    try:
      code = int(_line(timeout))
    except TimeoutError:
      os.kill(pid, signal.SIGKILL)
      _line(None)
      raise subprocess.TimeoutExpired([sys.executable, '-m', *args], timeout) from None
    with open(out) as f_out, open(err) as f_err:
      return subprocess.CompletedProcess([sys.executable, '-m', *args], code, f_out.read(),
                                         f_err.read())


_pending = b''


def _line(timeout: float | None) -> str:
  """The server's next line, read from its unbuffered pipe (TimeoutError after timeout s)."""
  global _pending
  deadline = None if timeout is None else time.monotonic() + timeout
  while b'\n' not in _pending:
    wait = None if deadline is None else max(0.0, deadline - time.monotonic())
    if not select.select([_server.stdout], [], [], wait)[0]:
      raise TimeoutError
    chunk = os.read(_server.stdout.fileno(), 4096)
    if not chunk:
      raise RuntimeError('the tests/forked.py server died')
    _pending += chunk
  line, _pending = _pending.split(b'\n', 1)
  return line.decode()


_SERVER = f'''
import importlib, json, os, runpy, sys
for name in {PRELOAD!r}:
  importlib.import_module(name)
for line in sys.stdin:
  request = json.loads(line)
  pid = os.fork()
  if pid == 0:
    code = 0
    try:
      os.chdir(request['cwd'])
      os.environ.clear()
      os.environ.update(request['env'])
      for fd, path in ((1, request['out']), (2, request['err'])):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(f, fd)
        os.close(f)
      sys.stdin = open(os.devnull)
      sys.path[0] = os.getcwd()
      sys.argv = [request['args'][0], *request['args'][1:]]
      runpy.run_module(request['args'][0], run_name='__main__', alter_sys=True)
    except SystemExit as e:
      code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
      if not isinstance(e.code, (int, type(None))):
        print(e.code, file=sys.stderr)
    except BaseException:
      import traceback
      traceback.print_exc()
      code = 1
    try:  # what the interpreter does on exit: non-daemon threads, then atexit
      import atexit, threading
      threading._shutdown()
      atexit._run_exitfuncs()
    except BaseException:
      pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
  print(pid, flush=True)
  _, status = os.waitpid(pid, 0)
  print(os.waitstatus_to_exitcode(status), flush=True)
'''
