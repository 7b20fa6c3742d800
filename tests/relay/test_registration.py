"""Registration rules as a pure decision: each rule by a plain call, no loop, no sockets."""

from __future__ import annotations

from dataclasses import replace

from arp.protocol import frames
from arp.relay.registration import Accept, Known, Refuse, Rules, check_tcp_ports, decide

RULES = Rules(
    version="9.9",
    auth_token=None,
    tcp_ports=range(20000, 20010),
    max_clients=2,
    max_tcp_ports_per_client=2,
)


def register(client_id: str = "alpha", **fields: object) -> frames.Register:
    values: dict[str, object] = {"tunnel_protocol": frames.TUNNEL_PROTOCOL, **fields}
    return frames.Register(client_id=client_id, **values)  # type: ignore[arg-type]


def test_a_new_client_is_accepted() -> None:
    assert decide(register(), None, 0, {}, RULES) == Accept(takeover=False, new=True)


def test_the_shared_secret_is_required_and_not_retryable() -> None:
    rules = replace(RULES, auth_token="s3cret")
    refused = decide(register(auth_token="wrong"), None, 0, {}, rules)
    assert isinstance(refused, Refuse) and not refused.retryable
    assert "--auth-token" in refused.error
    assert isinstance(decide(register(), None, 0, {}, rules), Refuse)
    assert decide(register(auth_token="s3cret"), None, 0, {}, rules) == Accept(False, True)


def test_another_tunnel_protocol_is_refused_naming_both() -> None:
    refused = decide(register(tunnel_protocol=1), None, 0, {}, RULES)
    assert isinstance(refused, Refuse) and not refused.retryable
    assert "arps 9.9" in refused.error and "speaks 1" in refused.error


def test_an_unusable_client_id_is_refused() -> None:
    refused = decide(register("-bad id"), None, 0, {}, RULES)
    assert isinstance(refused, Refuse) and not refused.retryable


def test_a_live_id_is_taken_over_only_with_its_resume_key() -> None:
    live = Known(live=True, resume_key="key-1")
    in_use = decide(register(), live, 1, {}, RULES)
    assert isinstance(in_use, Refuse) and in_use.retryable and "in use" in in_use.error
    assert isinstance(decide(register(resume_key="key-2"), live, 1, {}, RULES), Refuse)
    assert decide(register(resume_key="key-1"), live, 1, {}, RULES) == Accept(True, False)


def test_an_offline_id_comes_back_without_a_key() -> None:
    offline = Known(live=False, resume_key="key-1")
    assert decide(register(), offline, 2, {}, RULES) == Accept(takeover=False, new=False)


def test_a_full_relay_refuses_new_ids_only() -> None:
    full = decide(register("gamma"), None, 2, {}, RULES)
    assert isinstance(full, Refuse) and full.retryable
    offline = Known(live=False, resume_key="k")
    assert isinstance(decide(register(), offline, 2, {}, RULES), Accept)


def test_tcp_port_rules() -> None:
    assert check_tcp_ports("alpha", [], {}, replace(RULES, tcp_ports=None)) is None
    assert "grants no dedicated" in (
        check_tcp_ports("alpha", [20000], {}, replace(RULES, tcp_ports=None)) or ""
    )
    assert "at most 2" in (check_tcp_ports("alpha", [20000, 20001, 20002], {}, RULES) or "")
    assert "outside" in (check_tcp_ports("alpha", [30000], {}, RULES) or "")
    assert "held by another" in (check_tcp_ports("alpha", [20001], {20001: "beta"}, RULES) or "")
    assert check_tcp_ports("alpha", [20001], {20001: "alpha"}, RULES) is None
    refused = decide(register(tcp_ports=[30000]), None, 0, {}, RULES)
    assert isinstance(refused, Refuse) and not refused.retryable
