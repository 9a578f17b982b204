"""How far jaxlm's logits are from transformers' for each HF family, in float32 and bfloat16.

  python benchmarks/hf_precision.py

For each of Llama (GQA, llama3 RoPE), Mistral (one kv head) and Qwen2 (q/k/v
biases): the random model of tests/interop/hf_llama_test.py (every weight
perturbed), saved with save_pretrained, imported with jaxlm.import_hf, and
the max |logit difference| of jaxlm.load(run).logits against transformers'
float32 logits on 2 x 40 tokens, with float32 and with bfloat16 compute.
Prints a markdown table. Needs torch and transformers (test dependencies).
"""

import pathlib
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jaxlm  # noqa: E402
from tests.interop import hf_llama_test as models  # noqa: E402


def main():
  root = tempfile.mkdtemp()
  print('| family | max abs logit | float32 max difference | bfloat16 max difference |')
  print('| --- | --- | --- | --- |')
  for family in sorted(models.FAMILIES):
    config_cls, model_cls, extra = models.FAMILIES[family]
    torch.manual_seed(0)
    model = model_cls(config_cls(**models.COMMON, **extra)).eval()
    with torch.no_grad():
      for p in model.parameters():
        p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(f'{root}/{family}')
    reference = models._torch_logits(model, models.TOKENS_BL)
    run = f'{root}/run_{family}'
    jaxlm.import_hf(f'{root}/{family}', run)
    diffs = [np.abs(jaxlm.load(run, dtype=dtype).logits(models.TOKENS_BL) - reference).max()
             for dtype in ('float32', 'bfloat16')]
    print(f'| {family} | {np.abs(reference).max():.3f} | {diffs[0]:.2g} | {diffs[1]:.2g} |')


if __name__ == '__main__':
  main()
