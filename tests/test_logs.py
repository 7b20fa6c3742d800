from __future__ import annotations

import datetime as dt
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from arp import logs
from arp.client.identity import config_folder


def test_level_from_flag_then_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARP_LOG", "debug")
    assert logs.resolve_level(None) == "debug"
    assert logs.resolve_level("WARN") == "warning"
    monkeypatch.delenv("ARP_LOG")
    assert logs.resolve_level(None) == "info"
    with pytest.raises(ValueError, match="not one of"):
        logs.resolve_level("loud")


def test_daily_file_is_named_by_date(tmp_path: Path) -> None:
    handler = logs.DailyFileHandler(tmp_path, "arpc.log")
    handler.setFormatter(logging.Formatter("%(message)s"))
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "hello", None, None)
    handler.emit(record)
    handler.close()
    path = tmp_path / f"arpc.log.{dt.date.today().isoformat()}"
    assert path.read_text() == "hello\n"


def test_log_folder_falls_back_to_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "data-is-a-file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_DATA_HOME", str(blocker))
    monkeypatch.chdir(tmp_path)
    assert logs.log_folder("arpc") == tmp_path / "arpc" / "logs"


def test_tests_keep_arpc_files_out_of_the_real_home() -> None:
    """The session fixture points the XDG folders at a temporary folder, which every child
    process inherits: an arpc started by a test logs and keeps its id there, not in ~."""
    code = "from arp import logs; print(logs.log_folder('arpc'))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    folder = Path(done.stdout.strip())
    assert not folder.is_relative_to(Path.home() / ".local"), folder
    assert not config_folder().is_relative_to(Path.home() / ".config")
