"""Hugging Face GPT-2 weights in and out of a jaxlm run folder.

  python -m jaxlm.hf import --hf_dir=HF_DIR --workdir=RUN [--config=experiments/gpt2_124m.py]
  python -m jaxlm.hf export --workdir=RUN --out_dir=HF_DIR [--step=N]

The code is jaxlm/interop/gpt2_hf.py; `jaxlm.import_hf` / `jaxlm.export_hf`
are the same from Python.
"""

from jaxlm.interop import gpt2_hf

if __name__ == '__main__':
  gpt2_hf.main()
