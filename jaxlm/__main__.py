"""`python -m jaxlm <verb> [flags]` and the `jaxlm` console script.

  jaxlm train    --config=experiments/gpt_small.py [--workdir=DIR]   (python -m jaxlm.main)
  jaxlm finetune --config=experiments/agnews_classifier.py           (python -m jaxlm.finetune)
  jaxlm sample   --workdir=RUN --prompt=...                          (python -m jaxlm.sample)
  jaxlm evaluate --workdir=RUN                                       (python -m jaxlm.evaluate)
  jaxlm lm-eval  --workdir=RUN --tasks=hellaswag                     (python -m jaxlm.lm_eval)
  jaxlm plan     --config=... --devices=64                           (python -m jaxlm.plan)
  jaxlm prepare  --config=... --out=DATASET_DIR                      (python -m jaxlm.prepare)
  jaxlm plot     RUN... --out=loss.png                               (python -m jaxlm.plot)
  jaxlm import-hf --hf_dir=DIR --workdir=RUN                         (python -m jaxlm.hf import)
  jaxlm export-hf --workdir=RUN --out_dir=DIR                        (python -m jaxlm.hf export)

Each verb is the module shown; this only picks it, so the flags are the same.
"""

import runpy
import sys

VERBS = {  # verb -> (module, leading arguments)
    'train': ('jaxlm.main', []),
    'finetune': ('jaxlm.finetune', []),
    'sample': ('jaxlm.sample', []),
    'evaluate': ('jaxlm.evaluate', []),
    'lm-eval': ('jaxlm.lm_eval', []),
    'plan': ('jaxlm.plan', []),
    'prepare': ('jaxlm.prepare', []),
    'plot': ('jaxlm.plot', []),
    'import-hf': ('jaxlm.hf', ['import']),
    'export-hf': ('jaxlm.hf', ['export']),
}


def main() -> None:
  if len(sys.argv) < 2 or sys.argv[1] not in VERBS:
    got = f' (got {sys.argv[1]!r})' if len(sys.argv) > 1 else ''
    print(f'error: name a command{got}: jaxlm {"|".join(VERBS)} [--flags];'
          ' add --help after it for its flags', file=sys.stderr)
    sys.exit(1)
  module, lead = VERBS[sys.argv[1]]
  sys.argv = [f'jaxlm {sys.argv[1]}', *lead, *sys.argv[2:]]
  runpy.run_module(module, run_name='__main__', alter_sys=True)


if __name__ == '__main__':
  main()
