"""Loss curves to PNG: reading metrics.jsonl, the figure, the command line's errors."""

import json
import os

import numpy as np
import pytest
from matplotlib import image as mpimg

from jaxlm import plot
from tests import forked, testdata

REPO = str(testdata.REPO)
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def _write(run_dir, rows) -> str:
  """A run folder whose metrics.jsonl holds `rows` (dicts, or raw lines as str)."""
  os.makedirs(run_dir, exist_ok=True)
  with open(os.path.join(run_dir, 'metrics.jsonl'), 'w') as f:
    for row in rows:
      f.write((row if isinstance(row, str) else json.dumps(row)) + '\n')
  return str(run_dir)


def _curve(start, stop, every, first, decay):
  return [{'step': s, 'loss': first * decay ** (s / every), 'learning_rate': 1e-3,
           'grad_norm': 1.0} for s in range(start, stop + 1, every)]


def test_the_last_value_of_each_step_wins_and_train_and_eval_rows_both_count(tmp_path):
  run = _write(tmp_path / 'run', [
      {'step': 10, 'loss': 3.0},
      {'step': 20, 'loss': 2.5},
      {'step': 20, 'eval_loss': 2.7, 'eval_perplexity': 14.9},
      {'step': 30, 'loss': 9.9},  # logged, then the run died before its checkpoint
      # resumed from the step-20 checkpoint: 30 again, and past it
      {'step': 30, 'loss': 2.2},
      {'step': 40, 'loss': 2.0},
      {'step': 40, 'eval_loss': 2.3, 'eval_perplexity': 10.0},
  ])
  m = plot.read_metrics(run)
  assert m['loss'] == [(10, 3.0), (20, 2.5), (30, 2.2), (40, 2.0)]
  assert m['eval_loss'] == [(20, 2.7), (40, 2.3)]
  assert m['eval_perplexity'] == [(20, 14.9), (40, 10.0)]


def test_rows_out_of_order_come_back_sorted_by_step(tmp_path):
  run = _write(tmp_path / 'run', [{'step': 30, 'loss': 1.0}, {'step': 10, 'loss': 3.0},
                                  {'step': 20, 'loss': 2.0}])
  assert plot.read_metrics(run)['loss'] == [(10, 3.0), (20, 2.0), (30, 1.0)]


def test_non_finite_values_are_kept_and_non_scalars_left_out(tmp_path):
  run = _write(tmp_path / 'run', [
      {'step': 1, 'loss': 'nan', 'grad_norm': 'inf', 'skipped': True},
      {'step': 2, 'loss': 1.5, 'eval_confusion_matrix': [[1, 0], [0, 1]], 'note': 'x'},
  ])
  m = plot.read_metrics(run)
  assert np.isnan(m['loss'][0][1]) and m['loss'][1] == (2, 1.5)
  assert m['grad_norm'] == [(1, float('inf'))]
  assert set(m) == {'loss', 'grad_norm'}


def test_a_corrupt_line_is_skipped_with_a_warning_naming_file_and_line(tmp_path, capsys):
  run = _write(tmp_path / 'run', [
      {'step': 10, 'loss': 3.0},
      '{"step": 20, "loss": 2.',  # cut short by a crash
      '',
      {'loss': 2.0},  # no step
      {'step': 30, 'loss': 1.0},
  ])
  m = plot.read_metrics(run)
  assert m['loss'] == [(10, 3.0), (30, 1.0)]
  path = os.path.join(run, 'metrics.jsonl')
  assert capsys.readouterr().err.splitlines() == [
      f'warning: {path} line 2 is not JSON; skipped',
      f'warning: {path} line 4 has no integer "step"; skipped',
  ]


def test_plot_runs_writes_a_png_with_every_run(tmp_path):
  a = _write(tmp_path / 'baseline', _curve(10, 200, 10, 4.0, 0.95)
             + [{'step': s, 'eval_loss': 4.2 * 0.95 ** (s / 10)} for s in (50, 100, 150, 200)])
  b = _write(tmp_path / 'wider', _curve(10, 150, 10, 3.8, 0.93))
  out = tmp_path / 'figs' / 'loss.png'  # a folder that does not exist yet
  assert plot.plot_runs([a, b], str(out), title='baseline vs wider') == str(out)
  data = out.read_bytes()
  assert data[:8] == PNG_SIGNATURE
  assert len(data) > 10_000
  pixels = mpimg.imread(str(out))
  assert pixels.shape[:2] == (500, 800)
  rgb = (pixels[..., :3] * 255).round().astype(int).reshape(-1, 3)
  # matplotlib's first two cycle colours, one per run.
  for color in ((31, 119, 180), (255, 127, 14)):
    assert (np.abs(rgb - color).max(axis=1) <= 2).sum() > 100, color


def test_one_run_folder_may_be_passed_alone(tmp_path):
  _write(tmp_path / 'run', _curve(10, 30, 10, 3.0, 0.9))
  out = plot.plot_runs(tmp_path / 'run', str(tmp_path / 'loss.png'))  # a path, not a list
  assert (tmp_path / 'loss.png').read_bytes()[:8] == PNG_SIGNATURE and out.endswith('loss.png')


def test_runs_with_the_same_folder_name_are_told_apart(tmp_path):
  a, b = str(tmp_path / 'x' / 'run'), str(tmp_path / 'y' / 'run')
  assert plot._labels([a, b]) == [os.path.normpath(a), os.path.normpath(b)]
  assert plot._labels([a + '/', str(tmp_path / 'other')]) == ['run', 'other']


@pytest.mark.parametrize('make, match', [
    (lambda d: None, r'does not exist; pass the folder of a training run'),
    (lambda d: os.makedirs(d), r'holds no metrics\.jsonl; pass the folder of a training run'),
    (lambda d: _write(d, []), r'metrics\.jsonl is empty .*; train .* until it logs a step'),
    (lambda d: _write(d, ['not json', '']), r'metrics\.jsonl is empty'),
    (lambda d: _write(d, [{'step': 1, 'accuracy': 0.5}]), r'holds no "loss" or "eval_loss"'),
])
def test_unusable_run_folders_are_one_line_errors(tmp_path, capsys, make, match):
  run = str(tmp_path / 'run')
  make(run)
  with pytest.raises(plot.MetricsError, match=match) as e:
    plot.plot_runs([run], str(tmp_path / 'loss.png'))
  assert run in str(e.value) and '\n' not in str(e.value)
  assert not (tmp_path / 'loss.png').exists()
  # The command line: the same message, exit code 1, no traceback.
  assert plot.main([run, f'--out={tmp_path / "loss.png"}']) == 1
  err = capsys.readouterr().err.splitlines()
  assert err[-1] == f'error: {e.value}'


def test_command_line(tmp_path):
  good = _write(tmp_path / 'good', _curve(10, 50, 10, 3.0, 0.9) + [{'step': 50, 'eval_loss': 2.1}])
  out = tmp_path / 'loss.png'
  result = forked.run_module(['jaxlm.plot', good, f'--out={out}', '--title=tiny'], REPO,
                              timeout=120)
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines() == [
      f'{good}: train loss 1.7715 at step 50, eval loss 2.1000 at step 50',
      f'wrote {out}']
  assert out.read_bytes()[:8] == PNG_SIGNATURE

  missing = str(tmp_path / 'missing')
  os.makedirs(missing)
  result = forked.run_module(['jaxlm.plot', missing, f'--out={tmp_path / "x.png"}'], REPO,
                             timeout=120)
  assert result.returncode == 1
  assert result.stderr.splitlines() == [
      f'error: {missing} holds no metrics.jsonl; pass the folder of a training run,'
      ' or train until it logs a step (train.log_every)']
  assert not (tmp_path / 'x.png').exists()
