#!/usr/bin/env bash
# Set up and run the test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")"
bash setup.sh
PYTHON=${PYTHON:-.venv/bin/python}
exec "$PYTHON" -m pytest -q tests "$@"
