"""ARP — the AI Agent Reverse Proxy.

`arps` is the relay on a public host; `arpc` is the client behind NAT. See README.md.
"""

__version__ = "0.1.0"
