"""Fine-tunes a classifier on labelled text (topic, sentiment): the train verb for a
classification config.

  python -m jaxlm.finetune --config=experiments/agnews_classifier.py \
      [--workdir=DIR] [--config.classifier.init_from=RUN_DIR ...]

The same as `python -m jaxlm.main` with a classification config: one loop for
every task (jaxlm/training/loop.py, jaxlm/tasks/classify.py). With
classifier.init_from the body starts from a jaxlm pretraining run folder.
"""

from jaxlm import main as train_verb


if __name__ == '__main__':
  train_verb.main()
