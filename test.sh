#!/usr/bin/env bash
# Set up and run the test suite (what CI runs) on TEST_WORKERS processes (default 2; each
# takes ~5 GB of memory at its peak).
set -euo pipefail
cd "$(dirname "$0")"
bash setup.sh
PYTHON=${PYTHON:-.venv/bin/python}
exec "$PYTHON" -m pytest -q -n "${TEST_WORKERS:-2}" --dist worksteal tests "$@"
