#!/usr/bin/env bash
# east_jax on a Cloud TPU VM or pod slice: create, install, run, tail, delete.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: bash launch/tpu_vm.sh <create|install|run|tail|delete> [--help]

Runs east_jax on a Cloud TPU VM (one host) or pod slice (many hosts) with gcloud.
Every worker runs the same command (--worker=all); JAX's multi-process runtime
finds the other hosts by itself (EAST_DISTRIBUTED=1). The workdir and the TFDS
data dir live on a Cloud Storage bucket, mounted with gcsfuse at /mnt/$BUCKET.

  create    create the TPU VM / pod slice
  install   on every worker (idempotent): gcsfuse mount, clone or update the
            repo at $REPO_REF, pip install requirements.txt and jax[tpu]
  run       start training on every worker in the background; after a
            preemption (SIGTERM: every worker checkpoints at the same step and
            exits) run it again with the same RUN to resume
  tail      follow worker 0's log
  delete    delete the TPU VM / pod slice

Environment (required):
  TPU_NAME          e.g. east-v4-32
  ZONE              e.g. us-central2-b
  BUCKET            a gs:// bucket name without the prefix, e.g. my-east-bucket
For create:  ACCELERATOR_TYPE (e.g. v4-32), TPU_RUNTIME (e.g. tpu-ubuntu2204-base)
For install: REPO_URL (git URL of east_jax); REPO_REF (default main)
For run:     CONFIG (e.g. configs/imagenet_r50.py:method=east,sparsity=0.999),
             RUN (the run name: workdir /mnt/$BUCKET/runs/$RUN)
Optional:    PROJECT (gcloud project), EXTRA_FLAGS (e.g. "--config.num_epochs=10")

The data must be prepared once into /mnt/$BUCKET/tensorflow_datasets
(python -m east_jax.data.prepare imagenet2012 --manual_dir=... --data_dir=...).
Example:
  export TPU_NAME=east ZONE=us-central2-b BUCKET=my-bucket ACCELERATOR_TYPE=v4-32 \
         TPU_RUNTIME=tpu-ubuntu2204-base REPO_URL=https://github.com/<you>/east_jax.git
  bash launch/tpu_vm.sh create && bash launch/tpu_vm.sh install
  CONFIG=configs/imagenet_r50.py RUN=in_r50_east bash launch/tpu_vm.sh run
  RUN=in_r50_east bash launch/tpu_vm.sh tail
USAGE
}

require() {
  for name in "$@"; do
    if [ -z "${!name:-}" ]; then
      echo "error: set $name (see: bash launch/tpu_vm.sh --help)" >&2
      exit 2
    fi
  done
}

gcloud_tpu() {
  local project=()
  [ -n "${PROJECT:-}" ] && project=(--project="$PROJECT")
  gcloud compute tpus tpu-vm "$@" --zone="$ZONE" "${project[@]}"
}

on_all_workers() {
  gcloud_tpu ssh "$TPU_NAME" --worker=all --command="$1"
}

case "${1:-}" in
  -h|--help|help|"")
    usage
    [ -n "${1:-}" ] || exit 2
    ;;
  create)
    require TPU_NAME ZONE ACCELERATOR_TYPE TPU_RUNTIME
    gcloud_tpu create "$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" --version="$TPU_RUNTIME"
    ;;
  install)
    require TPU_NAME ZONE BUCKET REPO_URL
    ref=${REPO_REF:-main}
    on_all_workers "set -e
      if ! command -v gcsfuse >/dev/null; then
        echo 'deb https://packages.cloud.google.com/apt gcsfuse-jammy main' |
          sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null
        curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo apt-key add -
        sudo apt-get update -qq && sudo apt-get install -y -qq gcsfuse
      fi
      sudo mkdir -p /mnt/$BUCKET && sudo chown \$USER /mnt/$BUCKET
      mountpoint -q /mnt/$BUCKET || gcsfuse --implicit-dirs $BUCKET /mnt/$BUCKET
      [ -d east_jax ] || git clone $REPO_URL east_jax
      cd east_jax && git fetch -q origin
      git checkout -q --detach origin/$ref 2>/dev/null || git checkout -q --detach $ref
      python3 -m pip install -q -r requirements.txt
      python3 -m pip install -q \"jax[tpu]==\$(python3 -c 'import jax; print(jax.__version__)')\""
    ;;
  run)
    require TPU_NAME ZONE BUCKET CONFIG RUN
    on_all_workers "cd east_jax && EAST_DISTRIBUTED=1 \
      TFDS_DATA_DIR=/mnt/$BUCKET/tensorflow_datasets nohup python3 -m east_jax.main \
      --config='$CONFIG' --workdir=/mnt/$BUCKET/runs/$RUN ${EXTRA_FLAGS:-} \
      > \$HOME/east_$RUN.log 2>&1 &"
    echo "started $RUN on every worker of $TPU_NAME; follow with: RUN=$RUN bash launch/tpu_vm.sh tail"
    ;;
  tail)
    require TPU_NAME ZONE RUN
    gcloud_tpu ssh "$TPU_NAME" --worker=0 --command="tail -n 50 -f \$HOME/east_$RUN.log"
    ;;
  delete)
    require TPU_NAME ZONE
    gcloud_tpu delete "$TPU_NAME" --quiet
    ;;
  *)
    echo "error: unknown command '$1' (see: bash launch/tpu_vm.sh --help)" >&2
    exit 2
    ;;
esac
