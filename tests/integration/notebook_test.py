"""The notebooks: quickstart.ipynb runs and shows what it says; tpu_vm.ipynb parses."""

import ast
import os
import pathlib
import re
import sys
import time

import nbformat
import pytest

from tests import testdata

REPO = testdata.REPO
NOTEBOOKS = REPO / 'notebooks'
KERNEL = 'jaxlm-test-python'  # a kernel spec of our own: no user's 'python3' can shadow it


def _kernel_dir(root: pathlib.Path) -> str:
  """A kernel spec that starts ipykernel with this interpreter; JUPYTER_PATH for it."""
  from ipykernel import kernelspec
  from jupyter_client.kernelspec import KernelSpecManager
  jupyter_path = root / 'jupyter'
  argv = kernelspec.make_ipkernel_cmd(executable=sys.executable)
  kernelspec.write_kernel_spec(str(jupyter_path / 'kernels' / KERNEL),
                               overrides={'argv': argv, 'display_name': 'jaxlm test'})
  spec = KernelSpecManager(kernel_dirs=[str(jupyter_path / 'kernels')]).get_kernel_spec(KERNEL)
  assert spec.argv[0] == sys.executable, spec.argv
  return str(jupyter_path)


def _outputs(nb, output_type=None) -> list[dict]:
  return [o for cell in nb.cells if cell.cell_type == 'code' for o in cell.outputs
          if output_type is None or o.output_type == output_type]


def _text(nb) -> str:
  """Everything the notebook printed or displayed as text."""
  parts = []
  for o in _outputs(nb):
    if o.output_type == 'stream':
      parts.append(o.text)
    elif 'data' in o:
      parts.extend(str(o.data[k]) for k in ('text/plain', 'text/html') if k in o.data)
  return '\n'.join(parts)


def test_the_committed_notebooks_carry_no_outputs():
  for path in sorted(NOTEBOOKS.glob('*.ipynb')):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
      if cell.cell_type == 'code':
        assert not cell.outputs and cell.execution_count is None, (path.name, cell.source[:60])


def _python_source(cell_source: str) -> str:
  """A code cell without its shell (`!`) and magic (`%`) lines, which are not Python."""
  return '\n'.join('' if line.lstrip().startswith(('!', '%')) else line
                   for line in cell_source.splitlines())


def test_tpu_vm_notebook_is_valid_and_its_code_compiles():
  nb = nbformat.read(NOTEBOOKS / 'tpu_vm.ipynb', as_version=4)
  nbformat.validate(nb)
  code = [c.source for c in nb.cells if c.cell_type == 'code']
  assert code and any(c.cell_type == 'markdown' for c in nb.cells)
  for source in code:
    ast.parse(_python_source(source))


# What a notebook may import of jaxlm: the package (its API, docs/api.md), the config types
# and experiment loader that API takes, and the plot verb's functions; no internals.
JAXLM_API = {'jaxlm', 'jaxlm.config', 'jaxlm.experiments', 'jaxlm.plot'}


@pytest.mark.parametrize('name', ['quickstart.ipynb', 'tpu_vm.ipynb'])
def test_notebooks_import_jaxlm_s_api_jax_and_the_display_only(name):
  nb = nbformat.read(NOTEBOOKS / name, as_version=4)
  allowed = {'jax', 'numpy', 'matplotlib', 'IPython', 'os', 'pathlib', 'tempfile', 'shutil'}
  if name == 'quickstart.ipynb':
    first = nb.cells[[c.cell_type for c in nb.cells].index('code')].source
    assert first.index('xla_force_host_platform_device_count=8') < first.index('import jax')
  for cell in nb.cells:
    if cell.cell_type != 'code':
      continue
    for node in ast.walk(ast.parse(_python_source(cell.source))):
      if isinstance(node, ast.Import):
        modules = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module == 'jaxlm':
        modules = [f'jaxlm.{alias.name}' for alias in node.names]
      elif isinstance(node, ast.ImportFrom):
        modules = [node.module]
      else:
        continue
      for m in modules:
        assert m in JAXLM_API if m.startswith('jaxlm') else m.split('.')[0] in allowed, m


@pytest.mark.slow
def test_quickstart_runs_top_to_bottom_and_shows_what_it_says(tmp_path, monkeypatch):
  from nbclient import NotebookClient
  nb = nbformat.read(NOTEBOOKS / 'quickstart.ipynb', as_version=4)
  monkeypatch.setenv('JUPYTER_PATH', _kernel_dir(tmp_path))
  env = dict(os.environ)
  # The kernel must set up its 8 devices itself: none of conftest.py's flags reach it.
  env.pop('XLA_FLAGS', None)
  env.pop('JAXLM_TFDS_MANUAL_DIR', None)  # the data comes from the corpus bundled with jaxlm
  env.update(
      JAXLM_TFDS_DATA_DIR=testdata.tfds_data_dir(),
      JAXLM_EXPERIMENTS=str(REPO / 'experiments'),  # the kernel runs outside the repo
      TMPDIR=str(tmp_path),  # the notebook's run folder (tempfile.mkdtemp) lands here
      PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get('PYTHONPATH')])),
  )
  workdir = tmp_path / 'cwd'  # the kernel's working directory: nothing lands in the repo
  workdir.mkdir()
  client = NotebookClient(nb, kernel_name=KERNEL, timeout=300, allow_errors=False,
                          resources={'metadata': {'path': str(workdir)}})
  start = time.perf_counter()
  client.execute(env=env)
  seconds = time.perf_counter() - start
  print(f'quickstart.ipynb ran in {seconds:.1f}s')

  assert not _outputs(nb, 'error')
  text = _text(nb)
  assert '8 devices:' in text and 'CpuDevice(id=7)' in text
  assert "mesh {'data': 4, 'model': 2, 'pipeline': 1} on 8 cpu devices" in text
  assert 'train step    200/200 | loss' in text and 'eval  step    200 | loss' in text
  # The shardings: the embedding's rows and the MLP's hidden units over `model`.
  assert "mesh: {'data': 4, 'model': 2, 'pipeline': 1} | checkpoint step 200" in text
  assert re.search(r"\nwte +\(66, 64\) +P\('model', None\) +\(33, 64\)\n", text)
  assert re.search(r"\nstack/blocks/mlp/up +\(2, 64, 256\) +P\('pipeline', None, 'model'\)"
                   r" +\(2, 64, 128\)\n", text)
  assert 'CPU 0,2,4,6' in text and 'CPU 1,3,5,7' in text  # visualize_array_sharding
  # 160 sampled characters after each prompt: past the 64-character context.
  samples = next(o.text for o in _outputs(nb, 'stream') if 'context: 64' in o.text)
  blocks = samples.split('\n---\n')
  assert [b[:len(p)] for b, p in zip(blocks, ('ROMEO:', 'JULIET:'))] == ['ROMEO:', 'JULIET:']
  assert all(len(b) >= 160 for b in blocks[:2]), blocks
  assert blocks[2].strip() == 'context: 64 characters'
  pngs = [o for o in _outputs(nb, 'display_data') if 'image/png' in o.data]
  assert len(pngs) == 1 and len(pngs[0].data['image/png']) > 10_000
  run_dirs = [p for p in tmp_path.iterdir() if p.name.startswith('jaxlm_quickstart_')]
  assert len(run_dirs) == 1 and (run_dirs[0] / 'loss.png').exists()
  assert sorted(os.listdir(run_dirs[0] / 'checkpoints')) == ['100', '200']
  assert not list(workdir.iterdir())
