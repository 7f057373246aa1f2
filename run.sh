#!/usr/bin/env bash
# Set up, prepare Fashion-MNIST offline, train EAST at 99.9% sparsity on a ResNet of 3 stages
# x 3 blocks, width 32, with sparse compute (configs/first_run.py), and summarise the run.
#   bash run.sh [WORKDIR] [extra flags, e.g. --config.num_train_steps=100]
# The dense ResNet-18 run: see docs/running.md.
set -euo pipefail
cd "$(dirname "$0")"
bash setup.sh
PYTHON=${PYTHON:-.venv/bin/python}
DATA_DIR=${TFDS_DATA_DIR:-$HOME/tensorflow_datasets}
if [ ! -f "$DATA_DIR/fashion_mnist/3.0.1/dataset_info.json" ]; then
  "$PYTHON" -m east_jax.data.prepare fashion_mnist --data_dir="$DATA_DIR"
fi
WORKDIR=${1:-runs/first_run}
shift || true
"$PYTHON" -m east_jax.main --config=configs/first_run.py --workdir="$WORKDIR" \
  --config.dataset.data_dir="$DATA_DIR" "$@"
exec "$PYTHON" -m east_jax.run_summary --workdir="$WORKDIR"
