"""Train: python -m east_jax.main (or east-jax-train) --config=configs/<x>.py[:<arg>] --workdir=<dir>

The config argument picks method and sparsity (`:method=east,sparsity=0.9999`);
override any field with --config.<field>=<value>, e.g. --config.num_train_steps=100.
A run relaunched on the same workdir resumes from its latest checkpoint; on SIGTERM it
checkpoints at the next step and exits.
"""

import sys

from absl import flags
from absl import logging
from ml_collections import config_flags

from east_jax import cli
from east_jax import parallel
from east_jax import preemption
from east_jax import train
from east_jax.errors import RunIntegrityError, UserInputError

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics and logs; a run restarted "
                    "on the same folder resumes from its latest checkpoint.")
config_flags.DEFINE_config_file("config", None, "Experiment config file, e.g. "
                                "configs/fashion_mnist_r18.py:method=east,sparsity=0.999.",
                                lock_config=True)


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
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
  except (UserInputError, RunIntegrityError, FloatingPointError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except preemption.Stopped as e:
    print(e, file=sys.stderr)
    sys.exit(preemption.EXIT_CODE)


def run():
  cli.run(main, required=("config", "workdir"))


if __name__ == "__main__":
  run()
