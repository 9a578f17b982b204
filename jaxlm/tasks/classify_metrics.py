"""Classification metrics in numpy: a confusion matrix and what follows from it.

Rows of the confusion matrix are true classes, columns predicted classes.
Precision of a class never predicted, and recall of a class never present,
are 0 (scikit-learn's zero_division=0); so is F1 where both are 0. Macro
averages weigh every class equally, and macro F1 is the mean of the
per-class F1 scores (not the F1 of macro precision and recall).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def confusion_matrix(labels_N, preds_N, num_classes: int) -> np.ndarray:
  """int64 [C, C]: entry (t, p) counts examples of class t predicted as p."""
  labels_N, preds_N = np.asarray(labels_N), np.asarray(preds_N)
  if labels_N.shape != preds_N.shape or labels_N.ndim != 1:
    raise ValueError(f'labels {labels_N.shape} and predictions {preds_N.shape} must be'
                     ' 1-D and of the same length')
  for name, values in (('labels', labels_N), ('predictions', preds_N)):
    if values.size and (values.min() < 0 or values.max() >= num_classes):
      raise ValueError(f'{name} must lie in [0, {num_classes}); got {values.min()}..{values.max()}')
  cm_CC = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(cm_CC, (labels_N, preds_N), 1)
  return cm_CC


def _ratio(num, den) -> np.ndarray:
  num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
  return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def accuracy(cm_CC) -> float:
  """Fraction of examples on the diagonal (0 for an empty matrix)."""
  return float(_ratio(np.trace(cm_CC), np.sum(cm_CC)))


def precision_recall_f1(cm_CC) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Per-class precision, recall and F1, each float64 [C]."""
  cm_CC = np.asarray(cm_CC)
  tp_C = np.diag(cm_CC)
  precision_C = _ratio(tp_C, cm_CC.sum(axis=0))
  recall_C = _ratio(tp_C, cm_CC.sum(axis=1))
  f1_C = _ratio(2 * precision_C * recall_C, precision_C + recall_C)
  return precision_C, recall_C, f1_C


def summary(cm_CC) -> dict:
  """Accuracy, macro precision/recall/F1 and the matrix, as plain Python values."""
  precision_C, recall_C, f1_C = precision_recall_f1(cm_CC)
  return {
      'accuracy': accuracy(cm_CC),
      'macro_precision': float(precision_C.mean()),
      'macro_recall': float(recall_C.mean()),
      'macro_f1': float(f1_C.mean()),
      'examples': int(np.sum(cm_CC)),
      'confusion_matrix': np.asarray(cm_CC).tolist(),
  }


def format_report(cm_CC, class_names: Sequence[str]) -> str:
  """Per-class precision/recall/F1 and the confusion matrix, as a console table."""
  precision_C, recall_C, f1_C = precision_recall_f1(cm_CC)
  cm_CC = np.asarray(cm_CC)
  width = max(8, *(len(n) for n in class_names))
  lines = [f'{"class":<{width}}  precision  recall      f1  support']
  for i, name in enumerate(class_names):
    lines.append(f'{name:<{width}}  {precision_C[i]:9.4f}  {recall_C[i]:6.4f}  {f1_C[i]:6.4f}'
                 f'  {cm_CC[i].sum():7d}')
  lines.append(f'{"macro":<{width}}  {precision_C.mean():9.4f}  {recall_C.mean():6.4f}'
               f'  {f1_C.mean():6.4f}  {cm_CC.sum():7d}')
  lines.append('confusion matrix (rows: true class, columns: predicted):')
  lines.append(' ' * width + ''.join(f'  {n[:width]:>{width}}' for n in class_names))
  for i, name in enumerate(class_names):
    lines.append(f'{name:<{width}}' + ''.join(f'  {v:>{width}d}' for v in cm_CC[i]))
  return '\n'.join(lines)
