#!/usr/bin/env bash
# The whole test command: install what is missing, lint, type-check, run every test.
# That includes the real-CLI tier (the real Claude Code, Codex and Gemini CLIs from npm against
# mock model APIs on loopback); ARP_REAL_CLI=0 leaves it out for a quicker local run.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/protocol -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev

if [ "${ARP_REAL_CLI:-1}" = 1 ]; then
  echo "== agent CLIs for the real-CLI tier"
  bash scripts/install-agent-clis.sh
  export ARP_REAL_CLI=1
fi

echo "== ruff"
.venv/bin/ruff check src tests bench scripts
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
# pytest exits 5 when it collected no test: that is a failure here too (set -e).
# --durations=15 lists the slowest tests, so a test that grows slow is seen at once.
.venv/bin/python -m pytest --durations=15 "$@"
