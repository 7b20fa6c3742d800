"""arpc's access-token flags (issue 14 item 4): flags, env, the saved generated token."""

from __future__ import annotations

from pathlib import Path

import pytest

from arp.client import cli, identity


def test_flags_env_and_the_saved_token_make_the_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(identity, "config_folder", lambda: tmp_path)
    parser = cli.build_parser()
    args = parser.parse_args(["--access-token", "alice", "--access-token", "bob"])
    assert cli.access_tokens(args) == ("alice", "bob")
    monkeypatch.setenv("ARPC_ACCESS_TOKENS", "carol, dave,")
    assert cli.access_tokens(parser.parse_args([])) == ("carol", "dave")
    saved, _ = identity.save_new_access_token()
    assert cli.access_tokens(parser.parse_args([])) == ("carol", "dave", saved)
    with pytest.raises(ValueError, match="access token"):
        cli.access_tokens(parser.parse_args(["--access-token", "has space"]))


def test_generate_prints_a_token_and_saves_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(identity, "config_folder", lambda: tmp_path)
    assert cli.main(["--generate-access-token"]) == 0
    saved = identity.load_access_token()
    assert saved is not None and saved in capsys.readouterr().out
