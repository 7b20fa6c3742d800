import sys

from arp.client.cli import main

sys.exit(main())
