"""Generation over a KV cache, int8 weights."""
