"""The layout shows the architecture: one definition per name, imports that point down."""

import ast
import collections
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'jaxlm'

# Each module's layer: a module imports (at top level) only modules of its own
# layer or below. Longest matching prefix wins; a module missing here fails.
LAYERS = {
    'jaxlm.config': 0, 'jaxlm.rundir': 0, 'jaxlm.experiments': 0,
    'jaxlm.parallel.sharding': 1, 'jaxlm.parallel.distributed': 1,
    'jaxlm.parallel.simulated': 1, 'jaxlm.data': 1,
    'jaxlm.model': 2,
    'jaxlm.parallel.pipeline': 3, 'jaxlm.training': 3, 'jaxlm.inference': 3,
    'jaxlm.tasks': 4, 'jaxlm.interop': 4, 'jaxlm.inference.restore': 4,
    'jaxlm.inference.model': 4,
    'jaxlm.training.loop': 5, 'jaxlm.inference.lm_eval': 5,
    'jaxlm.plan': 6, 'jaxlm.cli': 6,
    'jaxlm': 7,  # the package root and its verbs (main, finetune, sample, ...)
}


def _modules():
  for path in sorted(PACKAGE.rglob('*.py')):
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    name = '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)
    yield name, ast.parse(path.read_text())


def _layer(module: str) -> int:
  best = max((p for p in LAYERS if module == p or module.startswith(p + '.')), key=len)
  return LAYERS[best]


def _top_level_imports(tree, modules: set[str]) -> set[str]:
  """The jaxlm modules a module imports when it is imported (not inside functions)."""
  out = set()
  for node in tree.body:
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('jaxlm'):
      for a in node.names:  # `from jaxlm.data import lm` imports the module jaxlm.data.lm
        name = f'{node.module}.{a.name}'
        out.add(name if name in modules else node.module)
    elif isinstance(node, ast.Import):
      out.update(a.name for a in node.names if a.name.startswith('jaxlm'))
  return out


def test_no_public_name_is_defined_twice():
  """One stack: a name means one thing, the package root's API functions included (they
  delegate to modules whose functions have names of their own)."""
  seen = collections.defaultdict(list)
  for module, tree in _modules():
    for node in tree.body:
      if (isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith('_')
          and node.name not in ('main', 'get_config')):
        seen[node.name].append(module)
  assert {k: v for k, v in seen.items() if len(v) > 1} == {}


def test_every_module_has_a_layer():
  for module, _ in _modules():
    _layer(module)  # raises ValueError for a module LAYERS does not place


def test_imports_point_down():
  modules = dict(_modules())
  upward = []
  for module, tree in modules.items():
    for imported in _top_level_imports(tree, set(modules)):
      if _layer(imported) > _layer(module):
        upward.append(f'{module} (layer {_layer(module)}) imports {imported}'
                      f' (layer {_layer(imported)})')
  assert upward == []
