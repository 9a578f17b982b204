"""IMDB movie-review sentiment (neg, pos), byte-level GPT; sized for an accelerator.

TFDS `imdb_reviews` (the default; needs internet once): the 25,000-review
train split trains, and 20% of the 25,000-review test split, held out
stratified by class (2,500 of each, chosen with train.seed), is the eval
split; the rest of the test split joins training. Reviews keep their last
data.max_length bytes (the verdict tends to come at the end).

  python -m jaxlm.finetune --config=experiments/imdb_classifier.py

From a local CSV with a header row and columns review,sentiment (values
negative/positive, as the widely shared "IMDB Dataset.csv"); 20% of it,
stratified by class, is held out as the eval split:

  python -m jaxlm.finetune --config=experiments/imdb_classifier.py:csv \\
      --config.data.train_files=/path/to/IMDB_Dataset.csv

From a byte-level pretraining run whose model.max_len is at least
data.max_length: add --config.classifier.init_from=RUN_DIR.
"""

import ml_collections


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.model = ml_collections.ConfigDict(dict(
      num_layers=6, num_heads=8, d_model=256, d_ff=1024, max_len=512,
      dropout=0.1, dtype='bfloat16', vocab_size=0, vocab_multiple=1,
      tie_embeddings=True, use_bias=False,
  ))
  c.data = ml_collections.ConfigDict(dict(
      source='tfds', train_files='', eval_files='', eval_holdout=0.2,
      csv_label_column=1, csv_text_columns=(0,), csv_labels=('negative', 'positive'),
      csv_skip_header=True,
      tfds_dataset='imdb_reviews', tfds_text_keys=('text',), tfds_label_key='label',
      tfds_data_dir='', train_split='train', eval_split='test',
      class_names=('neg', 'pos'),
      tokenizer='byte', vocab_size=0, max_length=512, truncation='keep_end',
      batch_size=64,
  ))
  c.classifier = ml_collections.ConfigDict(dict(pooling='mean', init_from=''))
  c.train = ml_collections.ConfigDict(dict(
      steps=3000, learning_rate=3e-4, min_lr_ratio=0.1, warmup_steps=200,
      weight_decay=0.1, beta1=0.9, beta2=0.99, adam_eps=1e-8, grad_clip=1.0, seed=0,
      log_every=100, eval_every=1000, checkpoint_every=1000, keep_checkpoints=2,
      grad_accum_steps=1, on_nonfinite='skip', spike_factor=0.0,
  ))
  c.parallel = ml_collections.ConfigDict(dict(data=-1, model=1, zero_stage=0, remat='none'))
  if variant == 'csv':
    c.data.source = 'csv'  # eval_files='': the holdout comes from train_files
  elif variant:
    raise ValueError(f'unknown variant {variant!r} of imdb_classifier; known: csv')
  return c
