"""The vendored slices in tests/assets hold what their README says."""

import numpy as np

from jaxlm.data import classify as classify_data
from tests import testdata

AG_ARGS = dict(label_column=0, text_columns=(1, 2), labels=('1', '2', '3', '4'))


def test_ag_news_slices():
  test = classify_data.read_csv(str(testdata.ag_news_dir() / 'test_slice.csv'), **AG_ARGS)
  np.testing.assert_array_equal(np.bincount(test.labels_N), [500] * 4)
  train = classify_data.read_csv(str(testdata.ag_news_dir() / 'train_subset.csv'), **AG_ARGS)
  assert len(train.texts) == 581 and not set(train.texts) & set(test.texts)


def test_tatoeba_slice_is_500_tab_separated_pairs():
  lines = testdata.tatoeba_eng_fra().read_text('utf-8').splitlines()
  pairs = [line.split('\t') for line in lines]
  assert len(pairs) == 500 and all(len(p) == 2 and all(p) for p in pairs)
  assert {len(english.split()) for english, _ in pairs} == {1, 2, 3, 4, 5}
