#!/usr/bin/env bash
# Runs a benchmark by hand: bash bench/run.sh relay [options]  (sessions, history, gateway: see bench/)
# Installs what the benchmarks drive (wrk, curl) when missing. Never part of the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
if ! command -v wrk >/dev/null || ! command -v curl >/dev/null; then
  echo "bench: installing wrk and curl"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk curl >/dev/null
fi
which=${1:-relay}; shift || true
exec .venv/bin/python "bench/${which}_bench.py" "$@"
