"""The commands and links of README.md and docs/*.md are real (fast: nothing trains).

Every shell command in a fenced block (```bash lines; ```text lines that start
with `$ `) that runs `python -m jaxlm...`, `jaxlm <verb>` or
`python benchmarks/...` is checked:

  * the module, verb (jaxlm/__main__.py's VERBS) or script exists;
  * every `--config=FILE[:variant]` exists and builds: ml_collections loads it
    with the command's `--config.a.b=v` overrides, converting each value to the
    type of its default as the command line does, and
    `jaxlm.config.from_configdict` checks it;
  * every other `--flag` is one the module defines (read from its source, as
    absl sees it; a slow test checks that reading against `--helpfull`), its
    required flags are given, and its positional arguments fit.

A ```text block that shows a command followed by its `error: ...` line runs
that command (it stops at the config check) and compares the line; one that
shows a `jaxlm.plan` command and its output runs it and compares every line. README.md
keeps at most 210 lines and the CI test command, and every relative link and
#anchor in README.md and docs/ resolves. Paths a reader replaces (RUN_DIR,
/path/to/...) are fine: only flags and configs are checked.
"""

from __future__ import annotations

import ast
import concurrent.futures
import dataclasses
import functools
import importlib.util
import itertools
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from jaxlm import config as config_lib
from jaxlm.__main__ import VERBS
from tests import forked

# ml_collections loads experiment files with importlib's old load_module().
pytestmark = pytest.mark.filterwarnings('ignore:the load_module:DeprecationWarning')

REPO = pathlib.Path(__file__).resolve().parents[1]
PAGES = [REPO / 'README.md', *sorted((REPO / 'docs').glob('*.md'))]
README_MAX_LINES = 210
SHELL_BLOCKS = ('bash', 'sh', 'shell')
PROMPT_BLOCKS = ('text', 'console', '')
PYTHON = re.compile(r'python(3(\.\d+)?)?')
SEPARATORS = ('&&', '||', ';', '|')
POSITIONALS = {  # module -> check of its positional arguments (others take none)
    'jaxlm.hf': lambda args: args in (['import'], ['export']),
    'jaxlm.plot': lambda args: len(args) >= 1,
}
HELP_FLAG = {'jaxlm.plot': '--help'}  # argparse; the rest are absl

# Documented commands that other tests run end to end (exactly, or with the
# test's own --workdir): the test named here proves the command works.
EXECUTED_ELSEWHERE = {
    'python -m jaxlm.main --config=experiments/gpt_small.py --config.model.num_heads=3':
        'tests/integration/train_test.py::test_main_prints_one_line_errors',
    'python -m pytest -q -n auto --maxprocesses=4': '.ci/run',
    'python -m jaxlm.lm_eval --workdir=RUN --tasks=jaxlm_mc,jaxlm_text'
    ' --include_path=tests/assets/lm_eval --limit=6':
        'tests/inference/lm_eval_test.py::test_the_command_prints_the_table_and_writes_the_json',
}


@dataclasses.dataclass(frozen=True)
class Command:
  page: str  # e.g. docs/training.md:42
  text: str  # as written, continuation lines joined
  module: str  # jaxlm.main, or benchmarks/decode.py
  args: tuple[str, ...]  # after the module; a verb's leading arguments included
  env: tuple[str, ...] = ()  # NAME=value settings before it
  output: tuple[str, ...] = ()  # the lines a ```text block shows after it

  @property
  def errors(self) -> list[str]:
    """The `error: ...` lines the page shows it printing (then it is an error example)."""
    return [line for line in self.output if line.startswith('error: ')]

  def __str__(self):
    return f'{self.page}: {self.text}'


# --- Reading the pages -------------------------------------------------------


def _blocks(text: str):
  """(language, line number of its first line, lines) of each fenced code block."""
  lang, start, body = None, 0, []
  for number, line in enumerate(text.splitlines(), 1):
    fence = re.match(r'\s*```(\S*)', line)
    if fence and lang is None:
      lang, start, body = fence.group(1), number + 1, []
    elif fence:
      yield lang, start, body
      lang = None
    elif lang is not None:
      body.append(line)


def _logical_lines(lines: list[str]):
  """(index of the first line, line): continuations and multi-line quotes joined."""
  i = 0
  while i < len(lines):
    first, line = i, lines[i]
    while True:
      if line.rstrip().endswith('\\') and i + 1 < len(lines):
        i += 1
        line = line.rstrip()[:-1] + ' ' + lines[i].strip()
        continue
      try:
        shlex.split(line, comments=True)
      except ValueError:  # an open quote: the string goes on on the next line
        if i + 1 < len(lines):
          i += 1
          line += '\n' + lines[i]
          continue
      break
    yield first, line
    i += 1


def _segments(tokens: list[str]):
  """The simple commands of a token list: split at && ; | and inside quoted commands."""
  segment = []
  for token in tokens:
    if token in SEPARATORS:
      yield segment
      segment = []
    elif re.search(r'\s', token) and re.search(r'\bpython|\bjaxlm ', token):
      # e.g. ssh --command="cd jaxlm && python -m jaxlm.main ...": the quoted command
      value = token.split('=', 1)[1] if token.startswith('-') and '=' in token else token
      yield segment
      yield from _segments(shlex.split(value, comments=True))
      segment = []
    else:
      segment.append(token)
  yield segment


ENV = re.compile(r'[A-Z_][A-Z0-9_]*=\S*')


def _command(segment: list[str]) -> tuple[str, list[str]] | None:
  """(module, arguments) when the segment runs jaxlm or a benchmark, else None."""
  for i, token in enumerate(segment):
    if PYTHON.fullmatch(token) and i + 1 < len(segment):
      rest = segment[i + 1:]
      if rest[0] == '-m' and len(rest) > 1 and rest[1].split('.')[0] == 'jaxlm':
        if rest[1] == 'jaxlm':  # python -m jaxlm <verb>
          return _verb(rest[2:])
        return rest[1], rest[2:]
      if rest[0].startswith('benchmarks/'):
        return rest[0], rest[1:]
      return None
  words = [t for t in segment if not ENV.fullmatch(t)]
  if words and words[0] == 'jaxlm':
    return _verb(words[1:])
  return None


def _verb(args: list[str]) -> tuple[str, list[str]]:
  if not args or args[0] not in VERBS:
    return f'jaxlm <verb {args[0] if args else ""!r} not in VERBS>', args[1:]
  module, lead = VERBS[args[0]]
  return module, [*lead, *args[1:]]


def _commands_of(line: str, where: str, output=()) -> list[Command]:
  found = []
  for segment in _segments(shlex.split(line, comments=True)):
    parsed = _command(segment)
    if parsed:
      env = tuple(itertools.takewhile(ENV.fullmatch, segment))
      found.append(Command(where, ' '.join(line.split()), parsed[0], tuple(parsed[1]), env,
                           tuple(output)))
  return found


def commands(page: pathlib.Path) -> list[Command]:
  name = page.relative_to(REPO).as_posix()
  found = []
  for lang, start, body in _blocks(page.read_text()):
    if lang in SHELL_BLOCKS:
      for first, line in _logical_lines(body):
        found += _commands_of(line, f'{name}:{start + first}')
    elif lang in PROMPT_BLOCKS:  # `$ command`, then what it printed (never parsed)
      starts = [i for i, line in enumerate(body) if line.startswith('$ ')]
      for n, first in enumerate(starts):
        last = first
        while body[last].rstrip().endswith('\\') and last + 1 < len(body):
          last += 1
        line = ' '.join(part.rstrip().removesuffix('\\') for part in body[first:last + 1])
        output = body[last + 1:starts[n + 1] if n + 1 < len(starts) else len(body)]
        found += _commands_of(line[2:], f'{name}:{start + first}', output)
  return found


ALL_COMMANDS = [c for page in PAGES for c in commands(page)]


def _id(c: Command) -> str:
  return f'{c.page} {c.module}'


# --- What each module accepts ------------------------------------------------
#
# Read from the sources (instant), the way absl sees them when the module runs
# as __main__: every DEFINE_* in its own file; the DEFINE_*s at the top level of
# the repository modules it imports (those run on import; a DEFINE inside a
# function of an imported module does not); all of the module its __main__
# block hands over to (`X.main()`); jaxlm/cli.py's common flags when it calls
# into `cli`; absl's own flags (or argparse's -h, --help). A slow test below
# checks this reading against each module's `--helpfull`.


def _exists(module: str) -> bool:
  """A script of the repository, or a module Python finds (importing only its parents)."""
  if module.endswith('.py'):
    return (REPO / module).is_file()
  try:
    return importlib.util.find_spec(module) is not None
  except ModuleNotFoundError:
    return False


def _source(module: str) -> pathlib.Path | None:
  """The file of a script or of a jaxlm module in this checkout; None if there is none."""
  if module.endswith('.py'):
    return REPO / module if (REPO / module).is_file() else None
  base = REPO.joinpath(*module.split('.'))
  return next((f for f in (base.with_suffix('.py'), base / '__init__.py') if f.is_file()), None)


@functools.cache
def _tree(module: str) -> ast.Module:
  return ast.parse(_source(module).read_text())


def _call_name(node: ast.Call) -> str:
  return getattr(node.func, 'attr', getattr(node.func, 'id', ''))


def _defines(nodes) -> set[str]:
  """Flag names that DEFINE_* and argparse add_argument calls among `nodes` define."""
  names = set()
  for node in nodes:
    if not isinstance(node, ast.Call) or not node.args:
      continue
    first, call = node.args[0], _call_name(node)
    if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
      continue
    if call.startswith('DEFINE'):
      names.add(first.value)
      if call in ('DEFINE_bool', 'DEFINE_boolean'):
        names.add('no' + first.value)
    elif call == 'add_argument' and first.value.startswith('-'):
      names |= {a.value.lstrip('-') for a in node.args if isinstance(a, ast.Constant)}
  return names


def _top_level(tree: ast.Module):
  """The nodes that run on import (not inside a function or class)."""
  todo = list(tree.body)
  while todo:
    node = todo.pop()
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
      yield node
      todo.extend(ast.iter_child_nodes(node))


def _imports(module: str) -> set[str]:
  """The repository modules `module` imports on import (jaxlm.*, sibling benchmarks)."""
  found = set()
  for node in _top_level(_tree(module)):
    if isinstance(node, ast.Import):
      candidates = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      candidates = [node.module, *(f'{node.module}.{a.name}' for a in node.names)]
    else:
      continue
    for name in candidates:
      sibling = f'benchmarks/{name}.py'
      if module.startswith('benchmarks/') and (REPO / sibling).is_file():
        found.add(sibling)
      elif name.split('.')[0] == 'jaxlm' and _source(name):
        found.add(name)
  return found


def _delegate(module: str) -> str | None:
  """`X.main()` under `if __name__ == '__main__':`, X imported from jaxlm: X's module."""
  tree = _tree(module)
  imports = {}
  for node in tree.body:
    if isinstance(node, ast.ImportFrom) and (node.module or '').startswith('jaxlm'):
      for alias in node.names:
        imports[alias.asname or alias.name] = f'{node.module}.{alias.name}'
  for node in tree.body:
    if isinstance(node, ast.If) and '__main__' in ast.unparse(node.test):
      for call in ast.walk(node):
        if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
            and isinstance(call.func.value, ast.Name) and call.func.value.id in imports):
          return imports[call.func.value.id]
  return None


@functools.cache
def _absl_flags() -> frozenset[str]:
  """The flags absl itself defines (app, logging, flags), from a bare interpreter."""
  out = subprocess.run(
      [sys.executable, '-c', 'from absl import app, flags, logging;'
       ' f = flags.FLAGS; print(" ".join(n for n in f if n));'
       ' print(" ".join("no" + n for n in f if f[n].boolean))'],
      capture_output=True, text=True, timeout=60, check=True)
  return frozenset(out.stdout.split())


@functools.cache
def defined_flags(module: str) -> frozenset[str]:
  tree = _tree(module)
  names = _defines(ast.walk(tree))
  seen, todo = set(), list(_imports(module))
  while todo:
    imported = todo.pop()
    if imported not in seen:
      seen.add(imported)
      names |= _defines(_top_level(_tree(imported)))
      todo.extend(_imports(imported))
  delegate = _delegate(module)
  if delegate:
    names |= defined_flags(delegate)
  runs_cli = any(isinstance(n, ast.Call) and ast.unparse(n.func).startswith('cli.')
                 for n in ast.walk(tree))  # cli.run...(body): the common flags
  if runs_cli:
    names |= _defines(ast.walk(_tree('jaxlm.cli')))
  argparse = any(isinstance(n, ast.Call) and _call_name(n) == 'ArgumentParser'
                 for n in ast.walk(tree))
  return frozenset(names | ({'h', 'help'} if argparse else _absl_flags()))


def required_flags(module: str) -> set[str]:
  """Flags marked required in the module's source, or in the module its __main__ runs."""
  names = set()
  for node in ast.walk(_tree(module)):
    if not isinstance(node, ast.Call):
      continue
    func = _call_name(node)
    required = any(k.arg == 'required' and getattr(k.value, 'value', False)
                   for k in node.keywords)
    first = node.args[0] if node.args else None
    if required and isinstance(first, ast.Constant) and isinstance(first.value, str):
      names.add(first.value.lstrip('-'))  # DEFINE_*('x', ..., required=True), add_argument
    if func in ('mark_flags_as_required', 'mark_flag_as_required') and first is not None:
      items = first.elts if isinstance(first, (ast.List, ast.Tuple)) else [first]
      names |= {e.value for e in items if isinstance(e, ast.Constant)}
  delegate = _delegate(module)
  return names | (required_flags(delegate) if delegate else set())


# --- The checks --------------------------------------------------------------


def _arguments(c: Command):
  """(config, overrides, other flags as (name, text), positionals) of a command."""
  config, overrides, others, positionals = None, [], [], []
  for arg in c.args:
    arg = arg.strip('[]')  # [--optional=flags]
    if arg in ('', '...'):
      continue
    if arg.startswith('--config='):
      config = arg.split('=', 1)[1]
    elif arg.startswith('--config.'):
      overrides.append(arg)
    elif arg.startswith('-'):
      others.append((arg.lstrip('-').split('=', 1)[0], arg))
    else:
      positionals.append(arg)
  return config, overrides, others, positionals


def build(config: str, overrides: list[str]) -> config_lib.Config:
  """The config a command's --config and --config.* flags give, checked."""
  path, colon, variant = config.partition(':')
  file = pathlib.Path(path) if os.path.isabs(path) else REPO / path
  assert file.is_file(), f'--config={config}: no such file'
  argv = ['docs', f'--config={file}{colon}{variant}', *overrides]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, flag_values=values, sys_argv=argv)
  values(argv)
  return config_lib.from_configdict(values.config)


def test_the_pages_hold_commands():
  pages = {c.page.split(':')[0] for c in ALL_COMMANDS}
  assert 'README.md' in pages and len(ALL_COMMANDS) > 30, pages


@pytest.mark.parametrize('c', ALL_COMMANDS, ids=_id)
def test_command(c: Command):
  assert _exists(c.module), f'{c}: no module or script {c.module}'
  config, overrides, others, positionals = _arguments(c)
  if config is None:
    assert not overrides, f'{c}: --config.* overrides without --config=FILE'
  elif not c.errors:  # an error example must fail: test_documented_errors_... runs it
    build(config, overrides)
  known = defined_flags(c.module)
  unknown = [text for name, text in others if name not in known]
  assert not unknown, f'{c}: {c.module} defines no flag {", ".join(unknown)}'
  given = {name for name, _ in others} | ({'config'} if config else set())
  missing = required_flags(c.module) - given
  assert not missing, f'{c}: {c.module} needs --{", --".join(sorted(missing))}'
  fits = POSITIONALS.get(c.module, lambda args: not args)
  assert fits(positionals), f'{c}: positional arguments {positionals} do not fit {c.module}'


def _help(module: str) -> str:
  run = [sys.executable, module] if module.endswith('.py') else [sys.executable, '-m', module]
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3')
  out = subprocess.run([*run, HELP_FLAG.get(module, '--helpfull')], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
  return out.stdout + out.stderr


def _listed(help_text: str) -> set[str]:
  names = set()
  for short, no, name in re.findall(r'(?m)^\s+(?:-(\w),\s?)?--(\[no\])?([A-Za-z][\w.-]*)',
                                    help_text):
    names |= {name, *(['no' + name] if no else []), *([short] if short else [])}
  return names


@pytest.mark.slow
def test_flags_read_from_the_sources_are_what_absl_lists():
  """The static reading above against each documented module's --helpfull (seconds each)."""
  modules = sorted({c.module for c in ALL_COMMANDS if _exists(c.module)})
  with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
    helps = dict(zip(modules, pool.map(_help, modules)))
  for module in modules:
    listed, read = _listed(helps[module]), defined_flags(module)
    assert read <= listed, (module, 'read but not defined', sorted(read - listed))
    # --helpfull lists more, from libraries (Orbax defines flags); never from our modules.
    sections = re.split(r'(?m)^(\S[^\n]*):\n', helps[module])
    for owner, body in zip(sections[1::2], sections[2::2]):
      owner = owner.removeprefix(f'{REPO}/')
      ours = (owner.startswith(('jaxlm', 'benchmarks/'))
              or (REPO / 'benchmarks' / f'{owner}.py').is_file())
      assert not ours or _listed(body) <= read, (module, owner, sorted(_listed(body) - read))


ERROR_EXAMPLES = [c for c in ALL_COMMANDS if c.errors]


@pytest.mark.parametrize('c', ERROR_EXAMPLES, ids=_id)
def test_documented_errors_are_what_the_command_prints(c: Command):
  """Each stops at the config check, before any work: seconds."""
  env = dict(os.environ, **dict(e.split('=', 1) for e in c.env))
  if c.module.endswith('.py'):
    out = subprocess.run([sys.executable, c.module, *c.args], cwd=REPO, capture_output=True,
                         text=True, timeout=120, env=env)
  else:  # `python -m`, in a process forked from one with jax imported
    out = forked.run_module([c.module, *c.args], REPO, timeout=120, env=env)
  assert out.returncode == 1, f'{c}: exit {out.returncode}\n{out.stdout[-2000:]}'
  errors = [line for line in out.stderr.splitlines() if line.startswith('error: ')]
  assert errors == c.errors, f'{c}\nstderr: {out.stderr[-2000:]}'
  shows_traceback = any(line.startswith('Traceback') for line in c.output)
  assert ('Traceback' in out.stderr) == shows_traceback, f'{c}\nstderr: {out.stderr[-2000:]}'


# Planner examples whose shown output the suite compares with what they print.
# The slow ones (a minute or more of compiling each) only with JAXLM_SLOW_DOCS=1.
OUTPUT_EXAMPLES = [c for c in ALL_COMMANDS if c.module == 'jaxlm.plan' and c.output
                   and not c.errors]
SLOW_OUTPUTS = ('experiments/gpt2_124m.py', 'experiments/llama')


@pytest.mark.parametrize('c', OUTPUT_EXAMPLES, ids=_id)
def test_shown_output_is_what_the_command_prints(c: Command):
  slow = any(name in c.text for name in SLOW_OUTPUTS)
  if slow and os.environ.get('JAXLM_SLOW_DOCS') != '1':
    pytest.skip('minutes of compiling: JAXLM_SLOW_DOCS=1 runs it')
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}  # --devices sets them
  env.update(JAX_PLATFORMS='cpu', **dict(e.split('=', 1) for e in c.env))
  out = subprocess.run([sys.executable, '-m', c.module, *c.args, '--compilation_cache_dir='],
                       cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
  assert out.returncode == 0, f'{c}\nstderr: {out.stderr[-2000:]}'
  shown = [line.rstrip() for line in c.output if line.strip()]
  assert out.stdout.rstrip().splitlines() == shown, f'{c}\nprinted:\n{out.stdout}'


def test_a_shown_output_is_checked_on_every_run():
  assert any(not any(name in c.text for name in SLOW_OUTPUTS) for c in OUTPUT_EXAMPLES)


def test_commands_named_as_executed_elsewhere_are_in_the_docs_and_their_tests_exist():
  written = {c.text for c in ALL_COMMANDS} | {
      line for page in PAGES for lang, _, body in _blocks(page.read_text()) for line in body}
  for command, test in EXECUTED_ELSEWHERE.items():
    assert any(command in w for w in written), f'{command!r} is in no page'
    file, _, name = test.partition('::')
    source = (REPO / file).read_text()
    assert not name or re.search(rf'^def {name}\(', source, re.M), f'{test} does not exist'
    assert name or command in source, f'{file} does not run {command!r}'


def test_readme_is_short_and_keeps_the_ci_command():
  readme = (REPO / 'README.md').read_text()
  lines = readme.count('\n')
  assert lines <= README_MAX_LINES, f'README.md has {lines} lines; move detail into docs/'
  ci = '```bash\npython -m pytest -q -n auto --maxprocesses=4\n```'
  assert ci in readme  # .ci/run runs this command


# --- Links -------------------------------------------------------------------


def _slug(heading: str) -> str:
  """GitHub's anchor of a heading."""
  text = re.sub(r'[`*_]|\[([^\]]*)\]\([^)]*\)', r'\1', heading).strip().lower()
  return re.sub(r'[^\w\- ]', '', text).replace(' ', '-')


def _prose(text: str) -> str:
  """The page without its fenced code blocks."""
  return re.sub(r'(?ms)^\s*```.*?^\s*```[^\n]*$', '', text)


@functools.cache
def _anchors(page: pathlib.Path) -> set[str]:
  return {_slug(h) for h in re.findall(r'(?m)^#{1,6}\s+(.+?)\s*#*$', _prose(page.read_text()))}


def links(page: pathlib.Path):
  """The relative targets of the page's Markdown links and images."""
  for target in re.findall(r'\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)', _prose(page.read_text())):
    if not re.match(r'[a-z][a-z0-9+.-]*:', target):  # http:, https:, mailto:
      yield target


@pytest.mark.parametrize('page', PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_resolve(page):
  broken = []
  for target in links(page):
    path, _, anchor = target.partition('#')
    file = (page.parent / path).resolve() if path else page
    if not file.exists():
      broken.append(f'{target} (no such file)')
    elif anchor and file.suffix == '.md' and anchor not in _anchors(file):
      broken.append(f'{target} (no heading #{anchor} in {file.relative_to(REPO)})')
  assert not broken, f'{page.relative_to(REPO)}: {"; ".join(broken)}'
