"""Command line: python -m east_jax.main --config=configs/<x>.py[:<arg>] --workdir=<dir>.

The config argument picks method and sparsity (`:method=east,sparsity=0.9999`);
override any field with --config.<field>=<value>, e.g. --config.num_train_steps=100.
"""

import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from east_jax import parallel
from east_jax import train
from east_jax.errors import UserInputError

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics and logs; a run restarted "
                    "on the same folder resumes from its latest checkpoint.")
config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def parse_flags(argv):
  """absl's flag parsing, with config-file errors as one line instead of a traceback."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    where = f"{lines[0].split(':')[0]}: " if len(lines) > 1 else ""
    print(f"error: {where}{lines[-1]}", file=sys.stderr)
    print("Pass --helpshort or --helpfull to see help on flags.", file=sys.stderr)
    sys.exit(2)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.ERROR)  # Orbax logs every save at INFO, tfds warns about OpenCV.
  try:
    config = FLAGS.config
    config.get("seed")  # config_flags defers a missing or broken file to the first access.
  except OSError as e:
    print(f"error: cannot load --config: {str(e).strip().splitlines()[-1].strip()}",
          file=sys.stderr)
    sys.exit(2)
  try:
    parallel.initialize_distributed(config)
    train.train_and_evaluate(config, FLAGS.workdir)
  except (UserInputError, FloatingPointError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
