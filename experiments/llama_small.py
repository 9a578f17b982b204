"""Llama-style character model on tiny_shakespeare: gpt_small's budget with Llama's blocks.

The same data, optimiser, steps and (within 1%) parameter count as
experiments/gpt_small.py, with Llama's architecture: RMSNorm, rotary
positions (no position table), a SwiGLU MLP and grouped-query attention (2
key/value heads for 4 query heads). d_ff 384 spends what GQA saves: 196,864
parameters per block in both; gpt_small also has its 64 x 128 position table.
docs/training.md compares the two runs' validation losses.

  python -m jaxlm.main --config=experiments/llama_small.py
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()

  c.model = ml_collections.ConfigDict(dict(
      num_layers=4, num_heads=4, d_model=128, d_ff=384, max_len=64,
      dropout=0.0, dtype='float32', vocab_size=0, vocab_multiple=1,
      tie_embeddings=True, use_bias=False,
      norm='rmsnorm', norm_eps=1e-5, positions='rope', rope_theta=10000.0,
      mlp='swiglu', num_kv_heads=2, qkv_bias=False, head_size=0,
      attention='auto', scan_unroll=4,
  ))
  c.data = ml_collections.ConfigDict(dict(
      source='tfds', dataset='tiny_shakespeare', text_key='text',
      train_split='train', eval_split='validation', manual_dir='',
      tfds_data_dir='', train_files='', eval_files='',
      tokenizer='char', vocab_size=0, seq_len=64, batch_size=12,
      # Data at scale (docs/data.md): a prepared folder, the raw-input cache, the
      # files' format, a given tokenizer file, document packing, the tokenizer's sample.
      dataset_dir='', cache_dir='', file_format='text', tokenizer_file='', pack=False,
      tokenizer_sample_mb=0,
  ))
  c.train = ml_collections.ConfigDict(dict(
      steps=2000, learning_rate=1e-3, min_lr_ratio=0.1, warmup_steps=100,
      weight_decay=0.1, beta1=0.9, beta2=0.99, adam_eps=1e-8, grad_clip=1.0,
      grad_accum_steps=1, seed=0, log_every=100, eval_every=500,
      eval_steps=20, checkpoint_every=500, keep_checkpoints=3,
      sample_prompt='ROMEO:', sample_tokens=200, sample_temperature=0.8,
      on_nonfinite='skip', spike_factor=3.0,
  ))
  c.parallel = ml_collections.ConfigDict(dict(
      data=-1, model=1, pipeline=1, zero_stage=0, remat='none',
      microbatches=1, pipeline_schedule='gpipe', pipeline_repeats=1))
  c.profile = ml_collections.ConfigDict(dict(start_step=10, num_steps=0))
  return c
