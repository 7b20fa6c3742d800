"""ARP — the AI Agent Reverse Proxy.

`arps` is the relay on a public host; `arpc` is the client behind NAT. See README.md.
"""

from arp import native as _native

__version__ = "0.1.0"

# Before any other arp module loads: the compiled data path, if built from these sources.
_native.install()
