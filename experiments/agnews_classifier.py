"""AG News topic classification (World, Sports, Business, Sci/Tech), byte-level GPT.

TFDS `ag_news_subset` (the default; needs internet once): the 120,000-row
train split trains and the whole 7,600-row test split is the eval split.
Each text is the title and the description joined by a newline, as UTF-8
bytes, cut to the first data.max_length bytes.

  python -m jaxlm.finetune --config=experiments/agnews_classifier.py

From local CSV files in the format of Xiang Zhang's release (train.csv,
test.csv: "label","title","description", label 1..4, no header): the eval
split is the whole of data.eval_files, as above; with
--config.data.eval_holdout=0.2 it is 20% of them, held out stratified by
class and chosen with train.seed, and the rest joins training.

  python -m jaxlm.finetune --config=experiments/agnews_classifier.py:csv \\
      --config.data.train_files=/path/to/ag_news/train.csv \\
      --config.data.eval_files=/path/to/ag_news/test.csv

From a byte-level pretraining run (its architecture and tokenizer are used;
data.max_length must fit its model.max_len): add
--config.classifier.init_from=RUN_DIR.
"""

import ml_collections


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # gpt_small's shape and context; replaced by the pretrained run's shape
  # when classifier.init_from is set.
  c.model = ml_collections.ConfigDict(dict(
      num_layers=4, num_heads=4, d_model=128, d_ff=512, max_len=64,
      dropout=0.1, dtype='float32', vocab_size=0, vocab_multiple=1,
      tie_embeddings=True, use_bias=False,
  ))
  c.data = ml_collections.ConfigDict(dict(
      source='tfds', train_files='', eval_files='', eval_holdout=1.0,
      csv_label_column=0, csv_text_columns=(1, 2), csv_labels=('1', '2', '3', '4'),
      csv_skip_header=False,
      tfds_dataset='ag_news_subset', tfds_text_keys=('title', 'description'),
      tfds_label_key='label', tfds_data_dir='', train_split='train', eval_split='test',
      class_names=('World', 'Sports', 'Business', 'Sci/Tech'),
      tokenizer='byte', vocab_size=0, max_length=64, truncation='keep_start',
      batch_size=32,
  ))
  c.classifier = ml_collections.ConfigDict(dict(pooling='mean', init_from=''))
  c.train = ml_collections.ConfigDict(dict(
      steps=300, learning_rate=1e-3, min_lr_ratio=0.1, warmup_steps=30,
      weight_decay=0.1, beta1=0.9, beta2=0.99, adam_eps=1e-8, grad_clip=1.0, seed=0,
      log_every=50, eval_every=100, checkpoint_every=100, keep_checkpoints=2,
      grad_accum_steps=1, on_nonfinite='skip', spike_factor=0.0,
  ))
  c.parallel = ml_collections.ConfigDict(dict(data=-1, model=1, zero_stage=0, remat='none'))
  if variant == 'csv':
    c.data.source = 'csv'  # the files come from --config.data.train_files / eval_files
  elif variant:
    raise ValueError(f'unknown variant {variant!r} of agnews_classifier; known: csv')
  return c
