"""Documents from TFDS or files, tokenizers, batches for each task."""
