"""Logging set-up shared by arps and arpc.

The level comes from `--log-level`, else env `ARP_LOG`, else `info`. arpc also writes daily
files named `arpc.log.YYYY-MM-DD` (as the original's tracing-appender did) in the platform's
data folder, falling back to `./arpc/logs/` where that folder cannot be written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import datetime as dt

# platformdirs and datetime are imported where the daily files are set up: arps writes no
# files and leaves them out (idle RSS, issue 18).

LEVELS = ("debug", "info", "warning", "error")
_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def resolve_level(flag: str | None) -> str:
    """The effective level name: flag, then env ARP_LOG, then info."""
    level = (flag or os.environ.get("ARP_LOG") or "info").strip().lower()
    if level == "warn":
        level = "warning"
    if level not in LEVELS:
        raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
    return level


class DailyFileHandler(logging.Handler):
    """Appends to `<stem>.YYYY-MM-DD` in `folder`, switching files when the date changes."""

    def __init__(self, folder: Path, stem: str) -> None:
        super().__init__()
        self.folder = folder
        self.stem = stem
        self._date: dt.date | None = None
        self._handler: logging.FileHandler | None = None

    @property
    def current_path(self) -> Path:
        import datetime as dt

        return self.folder / f"{self.stem}.{dt.date.today().isoformat()}"

    def emit(self, record: logging.LogRecord) -> None:
        import datetime as dt

        today = dt.date.today()
        if self._handler is None or today != self._date:
            if self._handler is not None:
                self._handler.close()
            path = self.current_path
            # Private to this user: created 0600, and one made before with looser bits is mended.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
            with contextlib.suppress(OSError):
                os.chmod(path, 0o600)
            self._handler = logging.FileHandler(path, encoding="utf-8")
            self._handler.setFormatter(self.formatter)
            self._date = today
        self._handler.emit(record)

    def close(self) -> None:
        if self._handler is not None:
            self._handler.close()
            self._handler = None
        super().close()


def log_folder(app: str) -> Path:
    """The platform data folder's `logs/` for `app`, or `./<app>/logs/` if that is not writable."""
    import platformdirs

    candidates = [Path(platformdirs.user_data_dir(app, appauthor=False)) / "logs"]
    candidates.append(Path.cwd() / app / "logs")
    for folder in candidates:
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                os.chmod(folder, 0o700)  # the logs are this user's alone (issue 14 item 4)
            probe = folder / ".write-test"
            probe.touch()
            probe.unlink()
            return folder
        except OSError:
            continue
    raise OSError(f"no writable log folder for {app}: tried {', '.join(map(str, candidates))}")


def setup(level_flag: str | None, *, file_app: str | None = None) -> Path | None:
    """Configure the root logger; returns the log folder when a daily file was set up."""
    level = resolve_level(level_flag)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(level.upper())
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter(_FORMAT))
    root.addHandler(console)
    folder: Path | None = None
    if file_app is not None:
        try:
            folder = log_folder(file_app)
        except OSError as exc:
            logging.getLogger(__name__).warning("file logging disabled: %s", exc)
        else:
            daily = DailyFileHandler(folder, f"{file_app}.log")
            daily.setFormatter(logging.Formatter(_FORMAT))
            root.addHandler(daily)
    return folder
