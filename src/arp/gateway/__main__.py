"""``python -m arp.gateway``: the gateway, or ``python -m arp.gateway agent`` (see `cli`)."""

from __future__ import annotations

import sys

from arp.gateway.cli import main

if __name__ == "__main__":
    sys.exit(main())
