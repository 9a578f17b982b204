"""Weights in and out of other libraries (Hugging Face)."""
