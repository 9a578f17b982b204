"""EleutherAI's lm-eval harness on a run folder: its tasks' scores, as its own table.

  python -m jaxlm.lm_eval --workdir=runs/imported --tasks=hellaswag,arc_easy \
      [--include_path=DIR --num_fewshot=N --limit=N --batch_size=0]

The model is the harness's model type `jaxlm` (jaxlm/inference/lm_eval.py) on
the run's newest readable checkpoint, its tokenizer and all local devices.
--tasks names the harness's tasks, groups or tags (comma-separated); the
task YAMLs under --include_path come on top of the harness's own. The table
goes to stdout and the harness's results JSON to
RUN/lm_eval/results_<date>T<time>.json (printed last). Tasks that download
their data need the network once (Hugging Face datasets caches them).
"""

from __future__ import annotations

import datetime
import difflib
import json
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import flags  # noqa: E402

from jaxlm import cli, rundir  # noqa: E402
from jaxlm.config import ConfigError  # noqa: E402

RESULTS_DIR = 'lm_eval'  # RUN/lm_eval/results_*.json


def _adapter():
  """jaxlm/inference/lm_eval.py, or a one-line error when the harness is not installed."""
  try:
    from jaxlm.inference import lm_eval as adapter
  except ImportError as e:
    raise ConfigError(f"python -m jaxlm.lm_eval needs EleutherAI's lm-eval harness ({e});"
                      " pip install 'lm-eval>=0.4' (or jaxlm[eval])") from None
  return adapter


def parse_tasks(value: str) -> list[str]:
  names = [n.strip() for n in (value or '').split(',') if n.strip()]
  if not names:
    raise ConfigError(f'--tasks={value!r} names no task; give comma-separated lm-eval task'
                      ' names, e.g. --tasks=hellaswag,arc_easy')
  return names


def task_manager(include_path: str | None, names: list[str] = ()):
  """The harness's task index: its own tasks, then those under include_path.

  When include_path alone has every one of `names`, only it is indexed: the
  harness's own 14,000 task files take about 8 s to index.
  """
  if include_path is not None and not os.path.isdir(include_path):
    raise ConfigError(f'--include_path={include_path} is not a folder (from {os.getcwd()});'
                      ' pass a folder of task YAML files')
  from lm_eval.tasks import TaskManager
  if include_path is not None and names:
    own = TaskManager(include_path=include_path, include_defaults=False)
    if set(names) <= set(own.all_tasks):
      return own
  return TaskManager(include_path=include_path)


def check_tasks(names: list[str], manager) -> None:
  """Every name a task, group or tag the index knows (or a task YAML file)."""
  known = set(manager.all_tasks)
  for name in names:
    if name not in known and not (name.endswith(('.yaml', '.yml')) and os.path.isfile(name)):
      close = difflib.get_close_matches(name, manager.all_tasks, n=3)
      hint = (f'did you mean {", ".join(close)}?' if close else
              'list them with `lm-eval ls tasks`, or add --include_path=DIR for your own')
      raise ConfigError(f'--tasks: {name!r} is not an lm-eval task, group or tag; {hint}')


def run_tasks(workdir: str, names: list[str], manager, *, num_fewshot: int | None = None,
             limit: int | None = None, batch_size: int | None = None) -> dict:
  """simple_evaluate of the tasks with model='jaxlm' on the run folder: its results dict."""
  import lm_eval
  try:
    return lm_eval.simple_evaluate(
        model='jaxlm', model_args={'workdir': workdir, 'batch_size': batch_size},
        tasks=names, task_manager=manager, num_fewshot=num_fewshot, limit=limit,
        log_samples=False)
  except (FileNotFoundError, ConnectionError) as e:  # a task's data files or download
    raise ConfigError(f'--tasks={",".join(names)}: a task\'s data could not be loaded'
                      f' ({type(e).__name__}: {" ".join(str(e).split())[:200]}); check the'
                      ' task\'s dataset_path/data_files, or the network for a download'
                      ) from None


def write_results(workdir: str, results: dict) -> str:
  """RUN/lm_eval/results_<date>T<time>.json: the harness's results, as its CLI writes them."""
  from lm_eval.utils import handle_non_serializable
  stamp = datetime.datetime.now().strftime('%Y-%m-%dT%H-%M-%S.%f')
  folder = rundir.path(workdir) / RESULTS_DIR
  folder.mkdir(parents=True, exist_ok=True)
  file = folder / f'results_{stamp}.json'
  text = json.dumps({k: v for k, v in results.items() if k != 'samples'}, indent=2,
                    default=handle_non_serializable, ensure_ascii=False)
  rundir.write_bytes(file, text.encode('utf-8'))
  return str(file)


def _lm_eval(_):
  f = flags.FLAGS
  names = parse_tasks(f.tasks)
  for flag in ('num_fewshot', 'limit'):
    if f[flag].value is not None and f[flag].value < (0 if flag == 'num_fewshot' else 1):
      raise ConfigError(f'--{flag}={f[flag].value} must be >= {0 if flag == "num_fewshot" else 1}')
  if f.batch_size < 0:
    raise ConfigError(f'--batch_size={f.batch_size} must be >= 0 (0: 8)')
  _adapter().check_run(f.workdir)  # before the task index (seconds) and the restore
  manager = task_manager(f.include_path, names)
  check_tasks(names, manager)
  results = run_tasks(f.workdir, names, manager, num_fewshot=f.num_fewshot, limit=f.limit,
                     batch_size=f.batch_size or None)
  from lm_eval.utils import make_table
  c = results['config']
  print(f'jaxlm {f.workdir} step {c["step"]} ({c["dtype"]}), limit: {f.limit},'
        f' num_fewshot: {f.num_fewshot}, batch_size: {c["batch_size_per_call"]}')
  print(make_table(results))
  if results.get('groups'):
    print(make_table(results, 'groups'))
  print(f'wrote {write_results(f.workdir, results)}')


def _define_flags() -> None:
  flags.DEFINE_string('workdir', None, 'Run folder (trained or imported, with a tokenizer).',
                      required=True)
  flags.DEFINE_string('tasks', None, 'Comma-separated lm-eval task, group or tag names.',
                      required=True)
  flags.DEFINE_string('include_path', None, 'A folder of task YAML files, added to the'
                      " harness's tasks.")
  flags.DEFINE_integer('num_fewshot', None, "Few-shot examples; default: each task's own.")
  flags.DEFINE_integer('limit', None, 'Score only the first N documents of each task.')
  flags.DEFINE_integer('batch_size', 0, 'Requests per Model.logits / Model.generate call;'
                       ' 0: 8.')


def main():
  _define_flags()
  cli.run_command(_lm_eval)


if __name__ == '__main__':
  main()
