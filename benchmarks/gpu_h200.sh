#!/usr/bin/env bash
# The prepared GPU check (at most ~8 minutes on one H200), for a machine where
# requirements.txt and jax[cuda12]==0.10.2 are installed:
#  1. train-step images/s of ResNet-50 (ImageNet shapes) and ResNet-34 (CIFAR shapes),
#     dense and EAST, bfloat16 and float32, batch 256, compile times;
#  2. sparse compute against dense and masked steps (ResNet-34, CIFAR shapes, batch 128,
#     RigL at 99.9% / 99.99%; `sparse_compute=auto` keeps GPUs dense, this forces "on");
#  3. a short CIFAR-scale run: full-width ResNet-34 with EAST at 99.9% for 600 steps on
#     Fashion-MNIST (the only dataset available offline), when Debian's IDX files are there.
#   bash benchmarks/gpu_h200.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu_h200}
mkdir -p "$OUT"
PYTHON=${PYTHON:-python3}
"$PYTHON" -c "import jax; assert jax.default_backend() == 'gpu', jax.devices(); print(jax.devices())"
timeout 180 "$PYTHON" -m benchmarks.throughput --models=resnet50:imagenet,resnet34:cifar \
  --methods=dense,east --dtypes=bfloat16,float32 --batch=256 --steps=5 | tee "$OUT/throughput.md"
timeout 120 "$PYTHON" -m benchmarks.sparse_compute --models=resnet34:cifar:128 \
  --sparsities=0.999,0.9999 --methods=rigl --steps=5 | tee "$OUT/sparse_compute.md" || true
if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  "$PYTHON" -m east_jax.data.prepare fashion_mnist --data_dir="$OUT/tfds"
  timeout 150 "$PYTHON" -m east_jax.main \
    --config=configs/fashion_mnist_r18.py:method=east,sparsity=0.999 --workdir="$OUT/fmnist_east" \
    --config.dataset.data_dir="$OUT/tfds" --config.model.name=resnet34 --config.model.width=64 \
    --config.model.dtype=bfloat16 --config.num_train_steps=600 --config.eval_every_steps=600 \
    --config.east.cycle_update_interval=20 --config.sparsity.update_interval=50
  cat "$OUT/fmnist_east/final_metrics.json"
fi
