"""The per-run supervisor: the process that owns an agent's pipes, so the run outlives arpc.

People restart arpc to upgrade it and machines kill it under memory pressure; an agent halfway
through a refactor must not go with it. So arpc never holds an agent's pipes itself. Each run is
started as ``python -m arp.agents.supervisor <run dir>/spec.json``, which forks once (the
parent reports the grandchild's readiness to arpc and exits, so the supervisor is nobody's
child to reap and is adopted by init) and, in a session of its own (``setsid``):

- starts the agent (argv, cwd and environment from the spec; stdin from /dev/null, or a pipe
  when arpc speaks the CLI's stdio protocol: ``ask`` mode, images in a prompt) in a process
  group of its own, and records its identity in ``agent.json`` (pid, start ticks, boot id: what
  `arp.agents.reap` matches a process by);
- appends every line the agent prints to ``out``, the run's spool: one record a line, ``o``
  (stdout) or ``e`` (stderr) and the line's bytes, cut at ``max_line`` as the session manager
  cuts them (`arp.agents.lines`), at most ``max_bytes`` in all. Records are appended by whole
  lines with one write each batch, and fsynced at most every ``sync_interval`` seconds (a crash
  of arpc loses nothing: the page cache holds it; the interval bounds what a crash of the
  machine can lose);
- after each append writes a byte to the ``wake`` FIFO (non-blocking; a full FIFO is no matter),
  so whichever arpc is tailing the spool reads it at once instead of polling;
- with a stdio protocol keeps the FIFO ``in`` open for reading and writing (so arpc may come and
  go without the agent ever seeing an end of input) and forwards what arrives there to the agent's
  stdin. A line holding only a NUL byte (never valid JSON, which escapes control characters)
  means "the agent has all its input": the agent's stdin is closed;
- when the agent exits: reads its pipes to their end (``kill_wait`` at most, then kills what is
  left of the agent's process group, which also closes pipes a grandchild held), fsyncs the
  spool, writes ``exit`` ({"exit_code": C} or {"error": text} when the agent could not start)
  atomically, and exits;
- if the run dir disappears (the session was deleted while no arpc watched it), or, for a
  manager that stores nothing (the spec names its ``owner``), that arpc is gone, kills the
  agent's group and exits: an orphan reaps itself within ``sync_interval``.

SIGINT and SIGTERM reach the supervisor only when sent to it; arpc signals the agent's group
(``agent.json``), and the supervisor ignores both so it always records how the agent ended. The
files of a run dir: ``spec.json`` (written by arpc), ``supervisor.json`` and ``agent.json``
(identities), ``out``, ``wake``, ``in``, ``exit``, ``cursor`` (arpc's: `arp.agents.reattach`).

This module is the process side only and imports nothing of asyncio; `arp.agents.reattach`
starts it, tails its spool and re-attaches to it after a restart.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from arp.agents.lines import LineFramer

CUT_MARKER = b" [line cut by arp]"
"""Ends an output line longer than ``max_line`` (the rest of it is dropped)."""

CLOSE_INPUT = b"\x00"
"""A line on the ``in`` FIFO meaning: close the agent's stdin."""

AGENT_PYTHONPATH = "ARP_AGENT_PYTHONPATH"
"""The agent's own PYTHONPATH (unset: it has none); the supervisor's is arp's own."""

SPOOL_FULL = b"arp: the run's output passed %d bytes; the rest is not kept"
"""The note the spool ends with when the agent printed more than its bound."""

STDOUT, STDERR = b"o", b"e"
"""The first byte of a spool record: which stream the line came from."""


def boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), so a reused pid is never mistaken for it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def identity(pid: int) -> dict[str, Any]:
    """A process as recorded (pid, start ticks, boot id)."""
    return {"pid": pid, "start": start_ticks(pid), "boot": boot_id()}


def alive(ident: dict[str, Any] | None) -> bool:
    """True when the recorded process is still the one running under its pid (not a zombie)."""
    if not ident or ident.get("start") is None or ident.get("boot") is None:
        return False
    pid = ident.get("pid")
    if not isinstance(pid, int) or pid <= 1:
        return False
    if boot_id() != ident["boot"] or start_ticks(pid) != ident["start"]:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Written whole or not at all (a temporary file renamed over it). Not fsynced: these
    files matter against a crash of arpc, which the page cache survives; a crash of the
    machine ends the run anyway."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, path)


class Spool:
    """The run's ``out`` file: whole records appended, fsynced at a bounded interval, at most
    ``limit`` bytes (beyond: one note, then the agent's lines are read and dropped)."""

    def __init__(self, path: Path, wake: int, limit: int) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.wake = wake
        self.limit = limit
        self.size = os.fstat(self.fd).st_size
        self.full = False
        self.lock = threading.Lock()
        self.dirty = False

    def append(self, stream: bytes, lines: list[bytes]) -> None:
        data = b"".join(stream + line + b"\n" for line in lines)
        with self.lock:
            if self.full:
                return
            if self.size + len(data) > self.limit:
                data = STDERR + SPOOL_FULL % self.limit + b"\n"
                self.full = True
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view) :]
            self.size += len(data)
            self.dirty = True
        # A full FIFO (nobody reads) is no matter: the reader finds it all when it looks.
        with contextlib.suppress(OSError):
            os.write(self.wake, b".")

    def sync(self) -> None:
        """fsync, outside the lock: the pumps go on appending while the disk catches up."""
        with self.lock:
            dirty, self.dirty = self.dirty, False
        if dirty:
            os.fsync(self.fd)


def _pump(stream: IO[bytes], kind: bytes, spool: Spool, max_line: int, chunk: int) -> None:
    framer = LineFramer(max_line, cut_marker=CUT_MARKER)
    fd = stream.fileno()
    while True:
        try:
            data = os.read(fd, chunk)
        except OSError:
            break
        if not data:
            break
        lines = [line for line in framer.feed(data) if isinstance(line, bytes)]
        if lines:
            spool.append(kind, lines)
    last = framer.end()
    if last is not None:
        spool.append(kind, [last])


def _forward(fifo: int, stdin: IO[bytes]) -> None:
    """``in`` → the agent's stdin, line by line, until the close line or a broken pipe."""
    held = b""
    target = stdin.fileno()
    while True:
        try:
            data = os.read(fifo, 65536)
        except OSError:
            return
        if not data:  # cannot happen while we hold a writer ourselves; be safe
            return
        held += data
        *lines, held = held.split(b"\n")
        for line in lines:
            if line == CLOSE_INPUT:
                stdin.close()
                return
            try:
                payload = memoryview(line + b"\n")
                while payload:
                    payload = payload[os.write(target, payload) :]
            except OSError:  # the agent is gone
                return


def _ignore(signum: int, frame: object) -> None:
    """SIGINT/SIGTERM to the supervisor itself: it goes on until the agent has ended."""


def supervise(spec_path: Path, ready: int | None) -> int:
    """The supervisor's life (see the module docstring); ``ready`` is closed once it is set up."""
    run_dir = spec_path.parent
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    signal.signal(signal.SIGINT, _ignore)
    signal.signal(signal.SIGTERM, _ignore)
    piped = bool(spec.get("stdin"))
    for name in ("wake", "in") if piped else ("wake",):
        if not (run_dir / name).exists():
            os.mkfifo(run_dir / name, 0o600)
    wake = os.open(run_dir / "wake", os.O_RDWR | os.O_NONBLOCK)
    fifo = os.open(run_dir / "in", os.O_RDWR) if piped else None
    spool = Spool(run_dir / "out", wake, int(spec["max_bytes"]))
    env = dict(os.environ)
    # Our own import path, not the agent's: the agent gets the environment arpc meant for it.
    original = env.pop(AGENT_PYTHONPATH, None)
    if original is None:
        env.pop("PYTHONPATH", None)
    else:
        env["PYTHONPATH"] = original
    write_json(run_dir / "supervisor.json", identity(os.getpid()))
    try:
        agent = subprocess.Popen(
            spec["argv"],
            cwd=spec.get("cwd"),
            env=env,
            stdin=subprocess.PIPE if piped else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            process_group=0,
        )
    except OSError as exc:
        write_json(run_dir / "exit", {"error": f"could not start {spec['argv'][0]}: {exc}"})
        if ready is not None:
            os.close(ready)
        return 0
    write_json(run_dir / "agent.json", identity(agent.pid))
    if ready is not None:
        os.close(ready)
    max_line, chunk = int(spec["max_line"]), int(spec["read_chunk"])
    assert agent.stdout is not None and agent.stderr is not None
    pumps = [
        threading.Thread(target=_pump, args=(agent.stdout, STDOUT, spool, max_line, chunk)),
        threading.Thread(target=_pump, args=(agent.stderr, STDERR, spool, max_line, chunk)),
    ]
    if fifo is not None and agent.stdin is not None:
        threading.Thread(target=_forward, args=(fifo, agent.stdin), daemon=True).start()
    for pump in pumps:
        pump.start()
    interval = float(spec["sync_interval"])
    # A thread blocked in wait() sees the exit at once (wait with a timeout polls).
    exited = threading.Event()

    def reap() -> None:
        agent.wait()
        exited.set()

    threading.Thread(target=reap, daemon=True).start()
    owner = spec.get("owner")
    while not exited.wait(interval):
        spool.sync()
        # Nobody will ever read this: the session was deleted, or the arpc that keeps its
        # sessions in memory only (and so cannot re-attach) is gone.
        if not run_dir.is_dir() or (owner is not None and not alive(owner)):
            _kill_group(agent.pid)
    code = agent.returncode
    deadline = time.monotonic() + float(spec["kill_wait"])
    for pump in pumps:
        pump.join(max(0.0, deadline - time.monotonic()))
    # Nothing of the run may outlive it; this also closes pipes a grandchild still held.
    _kill_group(agent.pid)
    for pump in pumps:
        pump.join(float(spec["kill_wait"]))
    # The exit record says the run is over: only once its process group is gone (SIGKILL is
    # delivered asynchronously), within the same bound.
    _wait_group_gone(agent.pid, time.monotonic() + float(spec["kill_wait"]))
    if run_dir.is_dir():
        write_json(run_dir / "exit", {"exit_code": code})
    return 0


def _wait_group_gone(pgid: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.01)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def main(argv: list[str]) -> int:
    """Forks: the child supervises; the parent exits once the child is set up (or gone)."""
    if len(argv) != 2:
        print("usage: python -m arp.agents.supervisor RUN_DIR/spec.json", file=sys.stderr)
        return 2
    spec_path = Path(argv[1])
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        os.read(read_end, 1)  # EOF once the child closed its end: set up, or dead
        return 0
    os.close(read_end)
    os.setsid()
    try:
        code = supervise(spec_path, write_end)
    except BaseException as exc:  # recorded where arpc looks, then gone
        try:
            failure = f"the run's supervisor failed: {exc!r}"
            write_json(spec_path.parent / "exit", {"error": failure})
        finally:
            os._exit(1)
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
