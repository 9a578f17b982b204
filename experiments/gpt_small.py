"""Character-level GPT on tiny_shakespeare: minutes on a laptop CPU.

The model and optimiser follow nanoGPT's CPU recipe for shakespeare_char
(4 layers, 4 heads, d_model 128, context 64, batch 12, 2000 steps, lr 1e-3,
AdamW beta2 0.99, no dropout); validation loss ends near 1.88.

  python -m jaxlm.main --config=experiments/gpt_small.py

No network is needed: jaxlm ships the corpus (jaxlm/data/corpora/), and
TFDS prepares tiny_shakespeare from it. Another copy of TFDS's download
(a folder holding input.txt) can be given with --config.data.manual_dir=DIR.

A profiler trace of steps 10..14 (open it with TensorBoard or ui.perfetto.dev):

  python -m jaxlm.main --config=experiments/gpt_small.py --config.profile.num_steps=5
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()

  c.model = ml_collections.ConfigDict(dict(
      num_layers=4, num_heads=4, d_model=128, d_ff=512, max_len=64,
      dropout=0.0, dtype='float32', vocab_size=0, vocab_multiple=1,
      tie_embeddings=True, use_bias=False,
      # GPT-2's blocks; experiments/llama_small.py has the Llama options.
      norm='layernorm', norm_eps=1e-5, positions='learned', rope_theta=10000.0,
      mlp='gelu', num_kv_heads=0, qkv_bias=False, head_size=0,
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
  # A jax.profiler trace of steps start_step.. into {workdir}/profile; 0 steps: off.
  c.profile = ml_collections.ConfigDict(dict(start_step=10, num_steps=0))
  return c
