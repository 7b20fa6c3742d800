#!/usr/bin/env bash
# The main job: install ARP, then run a relay + a forward-mode client + a demo service on
# loopback and print the public URL with its token. Options go to scripts/demo.py (--once).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
