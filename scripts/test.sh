#!/usr/bin/env bash
# The whole test command: install what is missing, lint, type-check, run every test.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/protocol -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev

echo "== ruff"
.venv/bin/ruff check src tests bench
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
# pytest exits 5 when it collected no test: that is a failure here too (set -e).
.venv/bin/python -m pytest "$@"
