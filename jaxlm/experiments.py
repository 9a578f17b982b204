"""Loading experiment files (`experiments/NAME.py`) outside absl flags."""

from __future__ import annotations

import importlib.util
import pathlib

import ml_collections

REPO = pathlib.Path(__file__).resolve().parents[1]


def load_configdict(path: str | pathlib.Path, overrides: dict | None = None
                    ) -> ml_collections.ConfigDict:
  """Runs `get_config()` of an experiment file and applies dotted overrides."""
  path = pathlib.Path(path)
  if not path.is_absolute() and not path.exists():
    path = REPO / path
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  cd = module.get_config()
  for key, value in (overrides or {}).items():
    section, name = key.split('.')
    if name not in cd[section]:
      raise KeyError(f'unknown setting {key}')
    cd[section][name] = value
  return cd
