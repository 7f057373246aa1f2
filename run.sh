#!/usr/bin/env bash
# Set up, prepare Fashion-MNIST offline, and train the default config.
#   bash run.sh [WORKDIR] [extra flags, e.g. --config.num_train_steps=100]
set -euo pipefail
cd "$(dirname "$0")"
bash setup.sh
PYTHON=${PYTHON:-.venv/bin/python}
DATA_DIR=${TFDS_DATA_DIR:-$HOME/tensorflow_datasets}
if [ ! -f "$DATA_DIR/fashion_mnist/3.0.1/dataset_info.json" ]; then
  "$PYTHON" -m east_jax.data.prepare fashion_mnist --data_dir="$DATA_DIR"
fi
WORKDIR=${1:-runs/fashion_mnist_r18}
shift || true
exec "$PYTHON" -m east_jax.main --config=configs/fashion_mnist_r18.py --workdir="$WORKDIR" \
  --config.dataset.data_dir="$DATA_DIR" "$@"
