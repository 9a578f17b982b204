"""Loading experiment files (`experiments/NAME.py`) outside absl flags.

A relative path is relative to the current directory, as on the command line
(`--config=experiments/gpt_small.py` from a checkout). Nothing is looked up
next to the installed package: pass an absolute path from anywhere else.
"""

from __future__ import annotations

import importlib.util
import pathlib

import ml_collections


def split_variant(path: str | pathlib.Path) -> tuple[pathlib.Path, str | None]:
  """'FILE.py:VARIANT' -> (FILE.py, 'VARIANT'), as --config takes it; else (path, None)."""
  text = str(path)
  file, sep, variant = text.rpartition(':')
  if sep and file.endswith('.py') and '/' not in variant:
    return pathlib.Path(file), variant
  return pathlib.Path(text), None


def load_configdict(path: str | pathlib.Path, overrides: dict | None = None
                    ) -> ml_collections.ConfigDict:
  """Runs `get_config()` (or `get_config(VARIANT)`) of an experiment file; applies dotted overrides.

  FileNotFoundError when the file does not exist (relative to the current directory).
  """
  file, variant = split_variant(path)
  if not file.is_file():
    raise FileNotFoundError(f'no experiment file {file} (from {pathlib.Path.cwd()})')
  spec = importlib.util.spec_from_file_location(file.stem, file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  cd = module.get_config() if variant is None else module.get_config(variant)
  for key, value in (overrides or {}).items():
    section, name = key.split('.')
    if name not in cd[section]:
      raise KeyError(f'unknown setting {key}')
    cd[section][name] = value
  return cd
