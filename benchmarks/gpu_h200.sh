#!/usr/bin/env bash
# The prepared GPU check: at most ~8 minutes on one H200, on a machine that has only the
# repository, the Fashion-MNIST IDX files (FMNIST_DIR, about 30 MB) and, where its Python
# lacks them, the data packages as wheels in .whl/ (tensorflow-datasets, array-record, grain,
# ml-collections, tensorboardX, ...: see ../.library/device/README.md for `pip download`).
#  1. the throughput table: train-step images/s of ResNet-50 (ImageNet shapes) and ResNet-34
#     (CIFAR shapes), dense and EAST, bfloat16 and float32, batch 256, compile times;
#  2. sparse compute against dense and masked steps (ResNet-34, CIFAR shapes, batch 128, RigL
#     at 99.9% / 99.99%; `sparse_compute=auto` keeps GPUs dense, the benchmark forces "on");
#  3. EAST and RigL on full-width ResNet-34 at 99.99% on Fashion-MNIST for EPOCHS epochs each
#     (default 2), each stopped by SIGTERM at its time budget (RUN_SECONDS, default 120): the run
#     checkpoints where it is, and its latest checkpoint is evaluated on the test split.
#   FMNIST_DIR=<idx dir> bash benchmarks/gpu_h200.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu_h200}
mkdir -p "$OUT"
PYTHON=${PYTHON:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
"$PYTHON" -c "import jax; assert jax.default_backend() == 'gpu', jax.devices(); print(jax.devices())"
timeout 150 "$PYTHON" -m benchmarks.throughput --models=resnet50:imagenet,resnet34:cifar \
  --methods=dense,east --dtypes=bfloat16,float32 --batch=256 --steps=5 | tee "$OUT/throughput.md"
timeout 90 "$PYTHON" -m benchmarks.sparse_compute --models=resnet34:cifar:128 \
  --sparsities=0.999,0.9999 --methods=rigl --steps=5 | tee "$OUT/sparse_compute.md" || true
FMNIST_DIR=${FMNIST_DIR:-/usr/share/datasets/fashion-mnist}
"$PYTHON" -m east_jax.data.prepare fashion_mnist --idx_dir="$FMNIST_DIR" --data_dir="$OUT/tfds"
for method in east rigl; do
  status=0
  timeout --preserve-status -s TERM "${RUN_SECONDS:-120}" "$PYTHON" -m east_jax.main \
    --config="configs/fashion_mnist_r18.py:method=$method,sparsity=0.9999" \
    --workdir="$OUT/r34_$method" --config.dataset.data_dir="$OUT/tfds" \
    --config.model.name=resnet34 --config.model.width=64 --config.model.dtype=bfloat16 \
    --config.num_epochs="${EPOCHS:-2}" --config.eval_splits="('test',)" \
    --config.checkpoint_every_steps=200 --config.compilation_cache_dir="$OUT/cache" || status=$?
  echo "$method: exit status $status (143: stopped at the time budget, checkpoint saved)"
  "$PYTHON" -m east_jax.evaluate --workdir="$OUT/r34_$method" --json="$OUT/r34_$method.json" \
    | grep -E "^(step|sparsity/kept|test_accuracy) " || true
done
