"""arpc's side of a supervised run: starting the supervisor, tailing its spool, re-attaching.

A run's agent is owned by its supervisor (`arp.agents.supervisor`), not by arpc, so a run goes
on while arpc is restarted or killed. This module is what arpc holds of such a run
(`SupervisedRun`):

- `start_supervised` writes the run dir's ``spec.json`` and starts ``python -m
  arp.agents.supervisor``, waiting (``supervisor_start`` at most) until it has started the agent;
- `SupervisedRun.read` takes the next whole records of the spool from arpc's offset (one
  ``pread`` of at most ``read_chunk`` bytes: cheap, from the page cache, never a scan), and
  `wait_wake` sleeps until the supervisor writes to the ``wake`` FIFO (or ``spool_poll``
  seconds pass, which also catches a supervisor that died without a word);
- the run has ended once the ``exit`` file is there (or the supervisor is gone) and the spool is
  read to its end;
- `Cursor` records, after each batch of records the manager turned into events, how far into
  the spool it read and the event log's last seq then. It is the one thing that ties the spool
  to the events: a restarted arpc cuts the event log back to the cursor's seq (events written
  after the cursor came from records it will read again), replays the spool up to the cursor's
  offset through a fresh parser (and ask protocol) with their output discarded, so their state
  is as it was, and goes on reading from there. Sequence numbers stay continuous and nothing
  is kept twice.

The run dir is ``<session folder>/run-<n>`` (a temporary folder for a manager that stores
nothing; such runs cannot outlive arpc anyway); it is removed once the run has ended and its
end is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import arp
from arp.agents.argv import RunSpec
from arp.agents.attachments import StoredAttachment
from arp.agents.spawn import loop_forks_in_its_thread
from arp.agents.supervisor import (
    AGENT_PYTHONPATH,
    CLOSE_INPUT,
    STDOUT,
    alive,
    identity,
    write_json,
)
from arp.config import SessionBounds

log = logging.getLogger(__name__)

ARP_PATH = os.path.dirname(os.path.dirname(os.path.abspath(arp.__file__)))
"""Where this arp is imported from: the supervisor runs the same code as the arpc starting it."""

CURSOR_SIZE = 64
"""Bytes of the cursor record (rewritten in place, one ``pwrite``)."""


def run_dir_of(folder: Path, number: int) -> Path:
    return folder / f"run-{number}"


def spec_to_json(spec: RunSpec) -> dict[str, Any]:
    data = dataclasses.asdict(spec)
    data["attachments"] = [item.to_json() for item in spec.attachments]
    return data


def spec_from_json(data: dict[str, Any]) -> RunSpec:
    """A stored `RunSpec` (fields it does not know are dropped; lists become tuples again)."""
    names = {f.name for f in dataclasses.fields(RunSpec)}
    values: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names
    }
    values["attachments"] = tuple(
        StoredAttachment.from_json(item) for item in data.get("attachments") or ()
    )
    return RunSpec(**values)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class Cursor:
    """(spool offset read, event log's last seq then), rewritten in place after each batch."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def load(self) -> tuple[int, int] | None:
        try:
            text = self.path.read_bytes().decode("ascii", errors="replace").split()
            return int(text[0]), int(text[1])
        except (OSError, ValueError, IndexError):
            return None

    def save(self, offset: int, seq: int) -> None:
        record = f"{offset} {seq}".encode().ljust(CURSOR_SIZE - 1) + b"\n"
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            os.pwrite(self._fd, record, 0)
        except OSError as exc:  # a run whose dir went (deleted) has nothing left to resume
            log.debug("could not save a run's cursor: %r", exc)

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


class SupervisorInput:
    """The agent's stdin as arpc holds it: the run dir's ``in`` FIFO (what `RunRecord` writes).

    Closing it tells the supervisor to close the agent's stdin; `detach` lets go of the FIFO
    without that (arpc stops, the run goes on)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    def is_closing(self) -> bool:
        return self._writer.is_closing()

    def writelines(self, lines: list[bytes]) -> None:
        self._writer.writelines(lines)

    def close(self) -> None:
        if not self._writer.is_closing():
            with contextlib.suppress(OSError, RuntimeError):
                self._writer.write(CLOSE_INPUT + b"\n")
            self._writer.close()

    def detach(self) -> None:
        if not self._writer.is_closing():
            self._writer.close()


class SupervisedRun:
    """One run's supervisor as arpc sees it (the `arp.agents.spawn.Child` the manager signals).

    ``pid`` is the agent's (its process group is what a cancel signals); `wait` resolves once
    the run has ended and the manager has read the spool to its end (`finish`)."""

    def __init__(self, run_dir: Path, bounds: SessionBounds, offset: int = 0) -> None:
        self.run_dir = run_dir
        self.bounds = bounds
        self.offset = offset
        self.cursor = Cursor(run_dir / "cursor")
        self.supervisor = _read_json(run_dir / "supervisor.json")
        self.agent = _read_json(run_dir / "agent.json")
        self.pid = int(self.agent["pid"]) if self.agent and "pid" in self.agent else 0
        self.returncode: int | None = None
        self._ended: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._wake_fd: int | None = None
        self._quiet = True
        """Time to ask /proc whether the supervisor lives (see `ended`)."""
        self._woken = asyncio.Event()
        self._spool_fd: int | None = None

    # ----------------------------------------------------------------------------- reading

    def read(self, until: int | None = None) -> list[tuple[bytes, list[bytes]]]:
        """The next whole records after ``offset`` (at most ``read_chunk`` bytes, or one record
        when a single one is longer; none past ``until``), grouped by stream in order;
        ``offset`` moves past them."""
        fd = self._spool()
        if fd is None:
            return []
        size = max(self.bounds.read_chunk, 4096)
        if until is not None:
            size = min(size, until - self.offset)
            if size <= 0:
                return []
        data = os.pread(fd, size, self.offset)
        end = data.rfind(b"\n")
        # One record longer than a chunk (``max_line`` bounds it): read it whole.
        while end < 0 and len(data) == size and until is None:
            size *= 2
            data = os.pread(fd, size, self.offset)
            end = data.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        groups: list[tuple[bytes, list[bytes]]] = []
        for record in data[:end].split(b"\n"):
            kind, line = record[:1], record[1:]
            if groups and groups[-1][0] == kind:
                groups[-1][1].append(line)
            else:
                groups.append((kind, [line]))
        return groups

    def _spool(self) -> int | None:
        if self._spool_fd is None:
            try:
                self._spool_fd = os.open(self.run_dir / "out", os.O_RDONLY)
            except OSError:
                return None
        return self._spool_fd

    def ended(self) -> bool:
        """The supervisor is done: its ``exit`` record is written, or it is gone without one.

        Cheap on the hot path (one stat); whether the supervisor still lives is asked of /proc
        only once its wake-up FIFO lost its writer or a whole ``spool_poll`` passed in silence."""
        if (self.run_dir / "exit").exists():
            return True
        if self._quiet:
            self._quiet = False
            return not alive(self.supervisor)
        return False

    def outcome(self) -> tuple[int | None, str | None]:
        """(the agent's exit code, an error) as the ``exit`` file says; none: the supervisor
        died without recording it."""
        data = _read_json(self.run_dir / "exit")
        if data is None:
            return None, "the run's supervisor ended without recording how the agent ended"
        code = data.get("exit_code")
        error = data.get("error")
        return (code if isinstance(code, int) else None), (
            str(error) if error is not None else None
        )

    async def wait_wake(self) -> None:
        """Until the supervisor appends (its ``wake`` FIFO), or ``spool_poll`` seconds pass."""
        self._watch()
        try:
            async with asyncio.timeout(self.bounds.spool_poll):
                await self._woken.wait()
        except TimeoutError:
            self._quiet = True
        self._woken.clear()

    def _watch(self) -> None:
        if self._wake_fd is not None:
            return
        try:
            self._wake_fd = os.open(self.run_dir / "wake", os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            return
        asyncio.get_running_loop().add_reader(self._wake_fd, self._on_wake)

    def _on_wake(self) -> None:
        assert self._wake_fd is not None
        try:
            data = os.read(self._wake_fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            # No writer any more: the supervisor is gone. Stop watching (EOF stays readable).
            self._unwatch()
            self._quiet = True
        self._woken.set()

    def _unwatch(self) -> None:
        if self._wake_fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._wake_fd)
            with contextlib.suppress(OSError):
                os.close(self._wake_fd)
            self._wake_fd = None

    # ----------------------------------------------------------------------------- input

    async def open_input(self) -> SupervisorInput | None:
        """A writer to the agent's stdin (``ask`` mode); None when the supervisor is gone."""
        loop = asyncio.get_running_loop()
        try:
            fd = os.open(self.run_dir / "in", os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            return None
        # uvloop takes the fd over (and closes it); asyncio closes the file object it is given.
        pipe = io.FileIO(fd, "wb", closefd=not loop_forks_in_its_thread(loop))
        try:
            transport, protocol = await loop.connect_write_pipe(
                lambda: asyncio.streams.FlowControlMixin(loop=loop), pipe
            )
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        return SupervisorInput(asyncio.StreamWriter(transport, protocol, None, loop))

    # ----------------------------------------------------------------------------- ending

    def kill_supervisor(self) -> None:
        """The last resort when the supervisor does not end after its agent was killed."""
        if alive(self.supervisor) and self.supervisor is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(self.supervisor["pid"]), signal.SIGKILL)

    def finish(self, code: int | None) -> None:
        """The manager read the run to its end: `wait` resolves."""
        self.returncode = code if code is not None else -1
        if not self._ended.done():
            self._ended.set_result(self.returncode)
        self.close()

    async def wait(self) -> int:
        return await asyncio.shield(self._ended)

    def close(self) -> None:
        self._unwatch()
        self.cursor.close()
        if self._spool_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._spool_fd)
            self._spool_fd = None


async def start_supervised(
    run_dir: Path,
    argv: list[str],
    *,
    cwd: str,
    env: Mapping[str, str],
    spec: RunSpec,
    bounds: SessionBounds,
    stdin: bool = False,
    owned: bool = False,
) -> SupervisedRun:
    """Starts the run's supervisor and returns once it has started the agent (or failed to).

    ``stdin``: the run talks to the agent over its stdin (its stdio protocol: ask mode, or a
    prompt that carries images). ``owned``: the run cannot outlive this arpc (nothing is stored,
    so none could re-attach): its supervisor stops the agent once this process is gone. OSError
    when the supervisor itself cannot start or does not get ready in time."""
    spec_json = {
        "argv": argv,
        "cwd": cwd,
        "stdin": stdin,
        "spec": spec_to_json(spec),
        "max_line": bounds.max_line,
        "read_chunk": bounds.read_chunk,
        "sync_interval": bounds.spool_sync_interval,
        "kill_wait": bounds.kill_wait,
        "max_bytes": bounds.max_output_bytes + bounds.max_line,
        "owner": identity(os.getpid()) if owned else None,
    }
    child_env = dict(env)
    own_path = ARP_PATH
    if "PYTHONPATH" in child_env:
        child_env[AGENT_PYTHONPATH] = child_env["PYTHONPATH"]
        child_env["PYTHONPATH"] = own_path + os.pathsep + child_env["PYTHONPATH"]
    else:
        child_env["PYTHONPATH"] = own_path
    # -S: no site-packages to scan at start (it needs only the stdlib and arp, on PYTHONPATH).
    command = [sys.executable, "-S", "-m", "arp.agents.supervisor", str(run_dir / "spec.json")]

    def launch() -> None:
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_json(run_dir / "spec.json", spec_json)
        with open(run_dir / "supervisor.log", "ab") as errors:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                cwd=run_dir,
                env=child_env,
                start_new_session=True,
            )
        try:
            process.wait(timeout=bounds.supervisor_start)
        except subprocess.TimeoutExpired as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            late = f"the run's supervisor was not ready in {bounds.supervisor_start}s"
            raise OSError(late) from exc

    # Off the loop: a fork there stalls every request (see arp.agents.spawn).
    await asyncio.to_thread(launch)
    run = SupervisedRun(run_dir, bounds)
    if run.supervisor is None:
        raise OSError(f"the run's supervisor did not start (see {run_dir / 'supervisor.log'})")
    return run


def is_stdout(kind: bytes) -> bool:
    return kind == STDOUT


def read_spec(run_dir: Path) -> RunSpec | None:
    """The run's `RunSpec` as arpc started it (None: no readable ``spec.json``)."""
    data = _read_json(run_dir / "spec.json")
    if data is None or not isinstance(data.get("spec"), dict):
        return None
    try:
        return spec_from_json(data["spec"])
    except (TypeError, ValueError):
        return None
