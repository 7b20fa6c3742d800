"""The cluster's ownership rules as pure code: records, the claim script's answers, leases."""

from __future__ import annotations

import pytest

from arp.relay.lease import (
    Claimed,
    HeldElsewhere,
    Holder,
    Keys,
    LeaseClock,
    PortTaken,
    lease_ms,
    read_claim_reply,
    resume_hash,
)


def test_keys_live_under_the_prefix() -> None:
    keys = Keys("p:")
    assert keys.client("x") == "p:client:x"
    assert keys.tcp_port(20000) == "p:tcp:20000"
    assert keys.node("n1") == "p:node:n1"
    assert keys.nodes == "p:nodes"


def test_a_record_round_trips_and_a_bad_one_reads_as_free() -> None:
    holder = Holder("a", resume_hash("k"), "e1")
    assert Holder.decode(holder.encode()) == holder
    assert Holder.decode(holder.encode().encode()) == holder
    assert Holder.decode(None) is None
    assert Holder.decode("not json") is None
    assert Holder.decode('{"rk": "x"}') is None


def test_the_resume_key_is_kept_only_as_a_hash() -> None:
    assert resume_hash(None) == "" and resume_hash("") == ""
    assert resume_hash("secret") != "secret" and len(resume_hash("secret")) == 64


def test_claim_replies() -> None:
    assert read_claim_reply([b"ok", b""]) == Claimed()
    assert read_claim_reply(["ok", "a"]) == Claimed(moved_from="a")
    held = read_claim_reply([b"held", b"node-a"])
    assert held == HeldElsewhere("node-a") and "node-a" in held.error
    assert read_claim_reply([b"port", b"20001", b"other"]) == PortTaken(20001, "other")
    with pytest.raises(ValueError):
        read_claim_reply([b"what"])


def test_lease_clock() -> None:
    clock = LeaseClock(lease=6, renew_every=2)
    assert not clock.stale(100.0)
    clock.renewed(100.0)
    assert not clock.stale(105.0)
    assert clock.stale(106.5)
    assert clock.expiry_bound() == 6 < 10
    assert lease_ms(0.0001) == 1 and lease_ms(6) == 6000
    with pytest.raises(ValueError):
        LeaseClock(lease=2, renew_every=2)


def test_the_default_lease_lets_a_dead_node_go_within_ten_seconds() -> None:
    from arp.config import CLUSTER_BOUNDS

    clock = LeaseClock(CLUSTER_BOUNDS.lease, CLUSTER_BOUNDS.renew_every)
    assert clock.expiry_bound() < 10
