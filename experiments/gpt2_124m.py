"""GPT-2 small (124M parameters) on lm1b, for accelerators.

12 layers, 12 heads, d_model 768, context 1024, vocabulary padded to 50304
(a multiple of 128 keeps the output matmul fast). The tokenizer is a 50257
piece SentencePiece model trained on the training split and cached in the run
folder. bf16 compute with float32 parameters and optimiser state.

  python -m jaxlm.main --config=experiments/gpt2_124m.py --workdir=runs/gpt2
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()

  c.model = ml_collections.ConfigDict(dict(
      num_layers=12, num_heads=12, d_model=768, d_ff=3072, max_len=1024,
      dropout=0.0, dtype='bfloat16', vocab_size=50304, vocab_multiple=128, real_vocab_size=0,
      tie_embeddings=True, use_bias=True,
      attention='auto', scan_unroll=12,
  ))
  c.data = ml_collections.ConfigDict(dict(
      source='tfds', dataset='lm1b', text_key='text',
      train_split='train', eval_split='test', manual_dir='',
      tfds_data_dir='', train_files='', eval_files='',
      tokenizer='sentencepiece', vocab_size=50257, seq_len=1024,
      batch_size=512,
      # Data at scale (docs/data.md): a prepared folder, the raw-input cache, the
      # files' format, a given tokenizer file, document packing, the tokenizer's sample.
      dataset_dir='', cache_dir='', file_format='text', tokenizer_file='', pack=False,
      tokenizer_sample_mb=0,
  ))
  c.train = ml_collections.ConfigDict(dict(
      steps=20000, learning_rate=6e-4, min_lr_ratio=0.1, warmup_steps=700,
      weight_decay=0.1, beta1=0.9, beta2=0.95, adam_eps=1e-8, grad_clip=1.0,
      grad_accum_steps=1, seed=0, log_every=50, eval_every=1000,
      eval_steps=50, checkpoint_every=1000, keep_checkpoints=3,
      sample_prompt='The', sample_tokens=100, sample_temperature=0.8,
      on_nonfinite='skip', spike_factor=3.0,
  ))
  c.parallel = ml_collections.ConfigDict(dict(
      data=-1, model=1, pipeline=1, zero_stage=0, remat='none',
      microbatches=1, pipeline_schedule='gpipe', pipeline_repeats=1))
  # A jax.profiler trace of steps start_step.. into {workdir}/profile; 0 steps: off.
  c.profile = ml_collections.ConfigDict(dict(start_step=10, num_steps=0))
  return c
