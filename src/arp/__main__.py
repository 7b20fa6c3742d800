"""`python -m arp` prints how to run the two programs."""

import sys

if __name__ == "__main__":
    sys.stderr.write("usage: python -m arp.relay (arps) | python -m arp.client (arpc)\n")
    sys.exit(2)
