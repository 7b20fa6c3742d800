from __future__ import annotations

import re
from pathlib import Path

from arp.client import identity


def test_id_is_uuid5_hex_upper_and_stable() -> None:
    facts = ["host", "machine-id", "user", "Linux", "x86_64", "debian 12"]
    first = identity.derive_client_id(facts)
    assert re.fullmatch(r"[0-9A-F]{32}", first)
    assert identity.derive_client_id(list(facts)) == first
    assert identity.derive_client_id([*facts[:-1], "debian 13"]) != first
    assert first[12] == "5"  # the UUID version nibble


def test_machine_facts_are_read_from_this_machine() -> None:
    facts = identity.machine_facts()
    assert len(facts) == 6 and facts[0]  # host name at least


def test_id_is_persisted_and_reused(tmp_path: Path) -> None:
    folder = tmp_path / "cfg"
    made = identity.load_or_create_client_id(folder)
    assert (folder / "client_id").read_text().strip() == made
    assert (folder / "client_id").stat().st_mode & 0o077 == 0  # a credential: this user only
    (folder / "client_id").write_text("CUSTOM\n")
    assert identity.load_or_create_client_id(folder) == "CUSTOM"


def test_unwritable_folder_still_gives_an_id(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert re.fullmatch(r"[0-9A-F]{32}", identity.load_or_create_client_id(blocker / "sub"))
