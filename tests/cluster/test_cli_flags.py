"""`arps --cluster` and its flags: what they build, and the clear errors of bad values."""

from __future__ import annotations

import socket

import pytest

from arp.relay import cli
from arp.relay.settings import RelayConfig


def config(*argv: str) -> RelayConfig:
    return cli.config_from_args(cli.build_parser().parse_args(list(argv)))


def test_without_cluster_there_is_none() -> None:
    assert config().cluster is None


def test_cluster_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    built = config(
        "--cluster",
        "--cluster-secret",
        "x" * 16,
        "--redis-url",
        "redis://127.0.0.1:1/3",
        "--peer-port",
        "18004",
        "--advertise-addr",
        "10.0.0.5:18004",
        "--control-port",
        "18001",
    ).cluster
    assert built is not None
    assert built.redis_url == "redis://127.0.0.1:1/3"
    assert built.peer_port == 18004 and built.advertise == "10.0.0.5:18004"
    assert built.node_id == f"{socket.gethostname()}:18001"
    named = config("--cluster", "--cluster-secret", "x" * 16, "--node-id", "n1").cluster
    assert named is not None and named.node_id == "n1"


def test_the_secret_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARPS_CLUSTER_SECRET", "y" * 20)
    built = cli.config_from_args(cli.build_parser().parse_args(["--cluster"]))
    assert built.cluster is not None and built.cluster.secret == "y" * 20


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cluster"], "--cluster-secret"),
        (["--cluster", "--cluster-secret", "short"], "at least 16"),
        (["--cluster", "--cluster-secret", "x" * 16, "--advertise-addr", "nohost"], "HOST:PORT"),
    ],
)
def test_bad_cluster_flags_exit_2(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ARPS_CLUSTER_SECRET", raising=False)
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
