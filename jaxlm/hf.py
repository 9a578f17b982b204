"""Hugging Face weights (GPT-2, Llama, Mistral, Qwen2) in and out of a jaxlm run folder.

  python -m jaxlm.hf import --hf_dir=HF_DIR --workdir=RUN [--config=experiments/gpt2_124m.py]
  python -m jaxlm.hf export --workdir=RUN --out_dir=HF_DIR [--step=N]

The code is jaxlm/interop/hf.py (tensor names: interop/hf_families.py);
`jaxlm.import_hf` / `jaxlm.export_hf` are the same from Python.
"""

from jaxlm.interop import hf as hf_interop

if __name__ == '__main__':
  hf_interop.main()
