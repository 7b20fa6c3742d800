import sys

from arp.relay.cli import main

sys.exit(main())
