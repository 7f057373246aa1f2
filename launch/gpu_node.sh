#!/usr/bin/env bash
# east_jax on one machine with several GPUs: one process drives all of them.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: CONFIG=<config[:arg]> WORKDIR=<dir> bash launch/gpu_node.sh [extra flags ...]

Trains on every GPU of this machine (one JAX process, a data mesh over all local
GPUs; the global batch must divide by their number). Restarting the same command
resumes from the workdir's latest checkpoint.

Environment:
  CONFIG       required, e.g. configs/cifar10_r34.py:method=east,sparsity=0.9999
  WORKDIR      required, e.g. runs/c10_r34_east_9999
  GPUS         optional, e.g. 0,1,2,3 (default: all; sets CUDA_VISIBLE_DEVICES)
  TFDS_DATA_DIR optional, where the prepared datasets are (default ~/tensorflow_datasets)
  PYTHON       optional, default python3
Install once: pip install -r requirements.txt && pip install "jax[cuda12]==0.10.2"
Extra arguments are passed to east_jax.main, e.g. --config.num_epochs=10.
USAGE
}

if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  usage
  exit 0
fi
for name in CONFIG WORKDIR; do
  if [ -z "${!name:-}" ]; then
    echo "error: set $name (see: bash launch/gpu_node.sh --help)" >&2
    exit 2
  fi
done
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ -n "${GPUS:-}" ]; then
  export CUDA_VISIBLE_DEVICES=$GPUS
fi
if ! "$PYTHON" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')"; then
  echo "error: JAX sees no GPU; install jax[cuda12]==0.10.2 (see --help)" >&2
  exit 2
fi
mkdir -p "$WORKDIR"
"$PYTHON" -m east_jax.main --config="$CONFIG" --workdir="$WORKDIR" "$@" \
  2>&1 | tee -a "$WORKDIR/train.log"
