#!/usr/bin/env bash
# One-time, idempotent set-up: a project virtual environment (.venv) with east-jax installed
# in it (pip install -e ".[test]"), and the offline Fashion-MNIST files. The system's Python
# is left untouched. PYTHON=<interpreter> installs into that interpreter's environment instead.
set -euo pipefail
cd "$(dirname "$0")"

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
apt_install() {
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@"
}

if [ -z "${PYTHON:-}" ]; then
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv 2>/dev/null || {
      rm -rf .venv
      apt_install python3-venv
      python3 -m venv .venv
    }
  fi
  PYTHON=.venv/bin/python
fi
# The native CPU kernels (east_jax/kernels) are compiled by pip install (setup.py) with g++.
command -v "${CXX:-g++}" >/dev/null || command -v c++ >/dev/null || apt_install g++
"$PYTHON" -m pip install --quiet --disable-pip-version-check -e ".[test]"

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  apt_install dataset-fashion-mnist
fi
