#!/usr/bin/env bash
# Installs what ARP needs on a fresh machine: a virtualenv with the package (and, with --dev,
# the test tools), plus the system programs the tests drive (PostgreSQL, Redis, Chromium, nginx).
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[ "${1:-}" = "--dev" ] && dev=1

python=""
for candidate in python3.13 python3.12 python3.11 python3; do
  if command -v "$candidate" >/dev/null 2>&1 &&
     "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    python=$candidate; break
  fi
done
[ -n "$python" ] || { echo "setup: Python 3.11 or newer is required" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $python"
  "$python" -m venv .venv
fi
# One stamp per flavour, named by a hash of pyproject.toml: a dev install satisfies both.
hash=$(sha256sum pyproject.toml | cut -c1-16)
if [ "$dev" = 1 ]; then want=.venv/.installed-dev-$hash; else want=.venv/.installed-base-$hash; fi
if [ ! -f "$want" ] && [ ! -f ".venv/.installed-dev-$hash" ]; then
  echo "setup: installing the package into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  if [ "$dev" = 1 ]; then
    .venv/bin/python -m pip install -q -e '.[dev]'
  else
    .venv/bin/python -m pip install -q -e '.[native]'
  fi
  rm -f .venv/.installed-* && touch "$want"
fi

if [ "$dev" = 1 ]; then
  missing=()
  command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
  { command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } || missing+=(postgresql)
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  # A C compiler and Python's headers: the suite runs the compiled data path, as users do.
  command -v cc >/dev/null 2>&1 || missing+=(gcc)
  .venv/bin/python -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' ||
    missing+=("$(basename "$(readlink -f "$(command -v "$python")")")-dev")
  # nginx: the HTTPS front of deploy/nginx/arp.conf, started privately by tests/deploy.
  { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; } || missing+=(nginx)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing system packages: ${missing[*]}"
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    # Debian starts the nginx it just installed on port 80; the tests need only the program.
    if [[ " ${missing[*]} " == *" nginx "* ]] && [ -d /run/systemd/system ]; then
      as_root=(); [ "$(id -u)" = 0 ] || as_root=(sudo)
      "${as_root[@]}" systemctl disable --now nginx >/dev/null 2>&1 || true
    fi
  fi
fi

# The data path compiled by mypyc (src/arp/native.py); a no-op when the build matches the
# sources, and without a C compiler ARP runs from its sources (this says so).
.venv/bin/python scripts/build_native.py
