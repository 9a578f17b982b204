"""Llama 3 8B's published shapes, for sizing layouts with the planner (and for accelerators).

32 layers, 32 query heads and 8 key/value heads of 128, d_model 4096, SwiGLU
d_ff 14336, vocabulary 128,256, context 8192, RoPE theta 500,000, RMSNorm eps
1e-5, untied output layer (Meta's params.json / HF's LlamaConfig for
meta-llama/Meta-Llama-3-8B): 8.03B parameters. Llama 3.1 8B adds RoPE scaling:
--config.model.rope_scaling=8 --config.model.max_len=131072 (low/high
frequency factors 1 and 4, original context 8192, the defaults here).
The optimiser is Llama's recipe: AdamW beta2 0.95, eps 1e-5, weight decay 0.1,
peak lr 3e-4, 2000 warmup steps, cosine to 10%, clipping at 1.0.

  python -m jaxlm.plan --config=experiments/llama3_8b.py --devices=64 --hbm_gib=80

The data section is a placeholder (lm1b with a 128,256-piece vocabulary); a
real run imports the weights and tokenizer (python -m jaxlm.hf import).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()

  c.model = ml_collections.ConfigDict(dict(
      num_layers=32, num_heads=32, d_model=4096, d_ff=14336, max_len=8192,
      dropout=0.0, dtype='bfloat16', vocab_size=128256, vocab_multiple=128, real_vocab_size=0,
      tie_embeddings=False, use_bias=False,
      norm='rmsnorm', norm_eps=1e-05, positions='rope', rope_theta=500000.0,
      rope_scaling=0.0, rope_low_freq_factor=1.0, rope_high_freq_factor=4.0,
      rope_original_max_len=8192,
      mlp='swiglu', num_kv_heads=8, qkv_bias=False, head_size=0,
      attention='auto', scan_unroll=1,
  ))
  c.data = ml_collections.ConfigDict(dict(
      source='tfds', dataset='lm1b', text_key='text',
      train_split='train', eval_split='test', manual_dir='',
      tfds_data_dir='', train_files='', eval_files='',
      tokenizer='sentencepiece', vocab_size=128256, seq_len=8192,
      batch_size=256,
      # Data at scale (docs/data.md): a prepared folder, the raw-input cache, the
      # files' format, a given tokenizer file, document packing, the tokenizer's sample.
      dataset_dir='', cache_dir='', file_format='text', tokenizer_file='', pack=False,
      tokenizer_sample_mb=0,
  ))
  c.train = ml_collections.ConfigDict(dict(
      steps=100000, learning_rate=3e-4, min_lr_ratio=0.1, warmup_steps=2000,
      weight_decay=0.1, beta1=0.9, beta2=0.95, adam_eps=1e-5, grad_clip=1.0,
      grad_accum_steps=1, seed=0, log_every=50, eval_every=1000,
      eval_steps=50, checkpoint_every=1000, keep_checkpoints=3,
      sample_prompt='The', sample_tokens=100, sample_temperature=0.8,
      on_nonfinite='skip', spike_factor=3.0,
  ))
  c.parallel = ml_collections.ConfigDict(dict(
      data=-1, model=1, pipeline=1, zero_stage=3, remat='full',
      microbatches=1, pipeline_schedule='gpipe', pipeline_repeats=1))
  c.profile = ml_collections.ConfigDict(dict(start_step=10, num_steps=0))
  return c
