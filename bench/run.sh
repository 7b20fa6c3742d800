#!/usr/bin/env bash
# Runs a benchmark by hand: bash bench/run.sh relay [options]  (sessions, history, gateway: see bench/)
# Installs what the benchmarks drive when missing. Never part of the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
# wrk and curl drive the loads; haproxy and OpenSSH are the relay benchmark's references;
# valgrind counts instructions (bench/instructions_bench.py).
missing=()
for pair in wrk:wrk curl:curl haproxy:haproxy ssh:openssh-client sshd:openssh-server valgrind:valgrind; do
  command -v "${pair%%:*}" >/dev/null || [ -x "/usr/sbin/${pair%%:*}" ] || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench: installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
which=${1:-relay}; shift || true
exec .venv/bin/python "bench/${which}_bench.py" "$@"
