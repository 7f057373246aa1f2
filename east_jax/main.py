"""Command line: python -m east_jax.main --config=configs/<x>.py --workdir=<dir>.

Override any field with --config.<field>=<value>, e.g. --config.num_train_steps=100.
"""

import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from east_jax import train
from east_jax.errors import UserInputError

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics and logs; a run restarted "
                    "on the same folder resumes from its latest checkpoint.")
config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.ERROR)  # Orbax logs every save at INFO, tfds warns about OpenCV.
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except (UserInputError, FloatingPointError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
