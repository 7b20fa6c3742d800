"""`python -m arp.relay`: the same program as the `arps` console script."""

import sys

from arp.relay.cli import main

sys.exit(main())
