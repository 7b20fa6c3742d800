"""The test helper `free_port` never gives the same port twice in a run.

The kernel may hand a just-closed port out again on the next ``bind(0)``; a cluster node that
got one port for two of its listeners failed to start once (tests/cluster/test_three_nodes).
"""

from __future__ import annotations

from tests.conftest import free_port


def test_free_port_never_hands_out_a_port_twice() -> None:
    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)
