"""`python -m arp.client`: the same program as the `arpc` console script."""

import sys

from arp.client.cli import main

sys.exit(main())
