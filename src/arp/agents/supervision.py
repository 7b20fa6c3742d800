"""How the session manager drives a run through its supervisor: start, read, stop, re-attach.

`arp.agents.sessions.SessionManager` inherits this part (`RunSupervision`) so the manager's
module keeps to its public face. A run's agent is owned by a supervisor process
(`arp.agents.supervisor`) and read from its spool (`arp.agents.reattach`); here is what the
manager does with it:

- `_run` starts the supervisor (or takes one it re-attached to), opens the agent's input in
  ``ask`` mode and writes the protocol's opening, then `_tail`s the spool into the event log until
  the run has ended, and records how it ended (`_finish`, the manager's). A run arpc lets go of
  at a stop with ``keep_runs_on_stop`` records nothing (`_let_go`): the next arpc takes it.
- `_tail` takes at most ``read_chunk`` bytes of whole records at a time under the manager's
  ingest lock, held over one turn of the loop, so many runs printing at once queue on the lock
  and a request waits for one chunk's parsing, never a hundred; between reads it sleeps on the
  supervisor's wake-up FIFO. After each chunk the cursor records the spool offset and the event
  log's last seq together.
- `_stop` is the signal ladder (SIGINT, SIGTERM, SIGKILL, each after its grace) to the agent's
  process group; a supervisor that does not end after it is killed too.
- `_reattach`, at start, for a session stored as running whose run dir has a supervisor:
  cuts the event log back to the cursor, replays the spool up to the cursor through a fresh
  parser and ask protocol (`replay`), finds the approvals that were pending (`unanswered`),
  and starts `_run` on it; they are asked again as new approvals of the same tool use, with a
  fresh deadline.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import signal
import tempfile
import time
from pathlib import Path

from arp.agents.argv import RunSpec
from arp.agents.ask import PermissionAsk
from arp.agents.desk import ApprovalDesk
from arp.agents.eventlog import EventLog
from arp.agents.events import Draft, Event, StreamParser
from arp.agents.reap import kill_group, signal_ladder
from arp.agents.reattach import (
    Cursor,
    SupervisedRun,
    SupervisorInput,
    is_stdout,
    read_spec,
    run_dir_of,
    start_supervised,
)
from arp.agents.records import RunRecord, SessionRecord
from arp.agents.session_types import SessionConfig

log = logging.getLogger(__name__)


class RunSupervision:
    """The run-driving half of the session manager (see the module docstring)."""

    config: SessionConfig
    _desk: ApprovalDesk
    _ingest: asyncio.Lock
    _tasks: set[asyncio.Task[None]]

    def _emit(self, entry: SessionRecord, run: RunRecord, drafts: builtins.list[Draft]) -> None:
        raise NotImplementedError

    def _finish(
        self, entry: SessionRecord, run: RunRecord, exit_code: int | None, error: str | None
    ) -> None:
        raise NotImplementedError

    def _save(self, entry: SessionRecord) -> None:
        raise NotImplementedError

    def _child_env(self, entry: SessionRecord) -> dict[str, str]:
        raise NotImplementedError

    async def _prepare_run(self, entry: SessionRecord, run: RunRecord) -> bool:
        raise NotImplementedError

    async def _run(
        self,
        entry: SessionRecord,
        run: RunRecord,
        launch: tuple[builtins.list[str], RunSpec] | None,
        resumed: SupervisedRun | None = None,
        asks: builtins.list[PermissionAsk] | None = None,
    ) -> None:
        """Runs one agent to its end and records how it ended: started here (``launch``), or
        re-attached to after a restart (``resumed``, with the ``asks`` still unanswered)."""
        exit_code: int | None = None
        error: str | None = None
        try:
            if launch is not None and run.protocol is not None and run.number > 0:
                delay = run.protocol.start_delay(entry.created_at, time.time())
                if delay > 0:
                    rule = f"{entry.executor.name}'s own rule"
                    note = f"waiting {delay:.0f} s before resuming ({rule})"
                    self._emit(entry, run, [Draft("system", text=note)])
                    await run.hold(delay)
            if run.cancel_requested or run.interrupt_requested:
                return  # stopped before it started
            supervised = resumed
            if supervised is None:
                assert launch is not None
                if not await self._prepare_run(entry, run):
                    return
                argv, spec = launch
                run_dir = self._run_dir(entry, run)
                run.run_dir = run_dir
                try:
                    supervised = await self._start_supervised(entry, run, run_dir, argv, spec)
                except OSError as exc:
                    error = f"could not start {argv[0]}: {exc}"
                    self._emit(entry, run, [Draft("error", text=error)])
                    return
            await self._attach(entry, run, supervised)
            if launch is not None and run.protocol is not None:
                # Off the loop: the opening may hold attached images in base64.
                run.write_input(await asyncio.to_thread(run.protocol.opening, launch[1].prompt))
            for ask in asks or ():
                self._desk.ask(entry, run, ask)
            exit_code, error = await self._tail(entry, run, supervised)
        except asyncio.CancelledError:
            if not run.detached:
                run.interrupt_requested = True
            raise
        except Exception as exc:  # a bug here must still end the run cleanly
            log.exception("session %s: run failed", entry.session_id)
            error = f"internal error: {exc}"
            if run.process is not None and run.process.pid > 1:
                # Nobody reads its output any more: it must not go on unwatched.
                kill_group(run.process.pid, signal.SIGKILL)
        finally:
            if run.detached:
                self._let_go(run)
            else:
                self._finish(entry, run, exit_code, error)

    async def _start_supervised(
        self,
        entry: SessionRecord,
        run: RunRecord,
        run_dir: Path,
        argv: builtins.list[str],
        spec: RunSpec,
    ) -> SupervisedRun:
        # The cursor first: an arpc that dies from here on resumes after the prompt event.
        await asyncio.to_thread(run_dir.mkdir, mode=0o700, parents=True, exist_ok=True)
        cursor = Cursor(run_dir / "cursor")
        cursor.save(0, entry.log.last_seq)
        cursor.close()
        return await start_supervised(
            run_dir,
            argv,
            cwd=entry.project_path,
            env=self._child_env(entry),
            spec=spec,
            bounds=self.config,
            stdin=run.protocol is not None,
            owned=self.config.data_dir is None,
        )

    async def _attach(
        self, entry: SessionRecord, run: RunRecord, supervised: SupervisedRun
    ) -> None:
        """The run's supervisor is up: record it, open the agent's input (``ask`` mode)."""
        run.process = supervised
        entry.child = {"supervisor": supervised.supervisor, "agent": supervised.agent}
        self._save(entry)
        if run.protocol is not None and not run.input_done and not supervised.ended():
            run.stdin = await supervised.open_input()
        # A cancel that came while the supervisor was starting waits for this (`_signal_ladder`):
        # the agent may have been running for a while by now, so it gets its grace periods.
        entry.changed()

    async def _tail(
        self, entry: SessionRecord, run: RunRecord, supervised: SupervisedRun
    ) -> tuple[int | None, str | None]:
        """Reads the run's spool into the event log until the run has ended: (exit code, error)."""
        done = False
        while True:
            groups = supervised.read()
            if groups:
                async with self._ingest:
                    self._ingest_records(entry, run, supervised, groups)
                    # Held over one turn of the loop: the other runs queue on the lock rather
                    # than on the loop, so a request waits for one chunk's parsing, not a hundred.
                    await asyncio.sleep(0)
                continue
            if done:
                break
            if supervised.ended():
                done = True  # the exit record comes after the last output: one more read
                continue
            await supervised.wait_wake()
        exit_code, error = supervised.outcome()
        if error is not None and supervised.agent is None:
            self._emit(entry, run, [Draft("error", text=error)])
        supervised.finish(exit_code)
        return exit_code, error

    def _ingest_records(
        self,
        entry: SessionRecord,
        run: RunRecord,
        supervised: SupervisedRun,
        groups: builtins.list[tuple[bytes, builtins.list[bytes]]],
    ) -> None:
        """One read's records into events; the cursor moves past them once all are kept."""
        run.in_batch = True
        try:
            for kind, lines in groups:
                self._emit_lines_safely(entry, run, lines, run.parser if is_stdout(kind) else None)
        finally:
            run.in_batch = False
        supervised.cursor.save(supervised.offset, entry.log.last_seq)

    def _emit_lines_safely(
        self,
        entry: SessionRecord,
        run: RunRecord,
        lines: builtins.list[bytes],
        parser: StreamParser | None,
    ) -> None:
        """`_emit_lines`, but a batch that cannot be kept never stops the pump: a pump that
        stopped reading would leave the child blocked on a full pipe and the run never ending."""
        try:
            self._emit_lines(entry, run, lines, parser)
        except Exception as exc:  # a bug or odd output: lose this batch, keep draining
            log.exception("session %s: could not keep a batch of output", entry.session_id)
            try:
                note = f"arp could not keep {len(lines)} line(s) of output: {exc!r}"
                self._emit(entry, run, [Draft("error", text=note)])
            except Exception:
                log.exception("session %s: could not record that", entry.session_id)

    def _emit_lines(
        self,
        entry: SessionRecord,
        run: RunRecord,
        lines: builtins.list[bytes],
        parser: StreamParser | None,
    ) -> None:
        drafts, asks = run.read_output(lines, parser)
        if drafts:
            self._emit(entry, run, drafts)
        for ask in asks:
            self._desk.ask(entry, run, ask)

    def _let_go(self, run: RunRecord) -> None:
        """arpc stops and the run goes on (``keep_runs_on_stop``): close what arpc holds."""
        if isinstance(run.stdin, SupervisorInput):
            run.stdin.detach()
        run.stdin = None
        if run.process is not None:
            run.process.close()

    def _run_dir(self, entry: SessionRecord, run: RunRecord) -> Path:
        if entry.folder is not None:
            return run_dir_of(entry.folder, run.number)
        # Nothing is stored: the run cannot outlive arpc, but its supervisor needs a place.
        return Path(tempfile.mkdtemp(prefix="arp-run-"))

    async def _stop(self, run: RunRecord) -> None:
        if run.stopping is None:
            run.stopping = asyncio.ensure_future(self._signal_ladder(run))
        await asyncio.shield(run.stopping)

    async def _signal_ladder(self, run: RunRecord) -> None:
        """SIGINT, then SIGTERM, then SIGKILL to the run's process group, each after a grace."""
        run.release()  # a run still holding before its start starts nothing
        # A run whose child is not spawned yet gets it within a moment; wait for it briefly.
        for _ in range(int(self.config.supervisor_start * 100)):
            if run.process is not None or (run.task is not None and run.task.done()):
                break
            await asyncio.sleep(0.01)
        if run.process is not None and run.process.pid > 1:
            steps = (
                (signal.SIGINT, self.config.sigint_grace),
                (signal.SIGTERM, self.config.sigterm_grace),
                (signal.SIGKILL, self.config.kill_wait),
            )
            await signal_ladder(run.process, steps)
            if run.process.returncode is None:
                # The agent is gone but its supervisor did not end: it is stopped too.
                run.process.kill_supervisor()

    def _reattach(self, entry: SessionRecord) -> bool:
        """A session stored as running whose run has a supervisor: goes on reading its output
        where the event log ends (`arp.agents.reattach`). False: nothing to re-attach to."""
        if entry.folder is None or entry.runs < 1:
            return False
        run_dir = run_dir_of(entry.folder, entry.runs - 1)
        spec = read_spec(run_dir)
        if spec is None:
            return False
        supervised = SupervisedRun(run_dir, self.config)
        if supervised.supervisor is None:
            supervised.close()
            return False
        offset, seq = supervised.cursor.load() or (0, entry.log.last_seq)
        entry.log.drop_after(seq)
        run = RunRecord(entry.runs - 1, entry.executor.stdio(spec))
        run.parser = entry.executor.parser()
        run.run_dir = run_dir
        asks = replay(run, supervised, offset, spec.prompt)
        asks = unanswered(asks, entry.log, run.number)
        log.info(
            "session %s: re-attached to its run %d (supervisor pid %s), from seq %d",
            entry.session_id, run.number, supervised.supervisor.get("pid"), seq,
        )  # fmt: skip
        entry.run = run
        run.task = asyncio.ensure_future(self._run(entry, run, None, supervised, asks))
        self._tasks.add(run.task)
        run.task.add_done_callback(self._tasks.discard)
        return True


def replay(
    run: RunRecord, supervised: SupervisedRun, offset: int, prompt: str
) -> builtins.list[PermissionAsk]:
    """Feeds the spool up to ``offset`` through the run's fresh parser and ask protocol with
    their output discarded (it is in the event log already), so their state is as it was when
    the cursor was saved; returns the permission requests they met, in order."""
    if run.protocol is not None:
        run.protocol.opening(prompt)  # its ids and state; the lines went out long ago
    asks: builtins.list[PermissionAsk] = []
    while supervised.offset < offset:
        groups = supervised.read(until=offset)
        if not groups:
            break
        for kind, lines in groups:
            if is_stdout(kind):
                asks.extend(run.read_output(lines, run.parser)[1])
    supervised.offset = offset
    return asks


def unanswered(
    asks: builtins.list[PermissionAsk], log_: EventLog, run_number: int
) -> builtins.list[PermissionAsk]:
    """Of a re-attached run's ``asks``, those whose ``approval_request`` event has no decision:
    they are asked again (the person's earlier approval id went with the arpc that held it)."""
    open_events: dict[str, Event] = {}
    after = 0
    while True:
        batch = log_.lines_after(after, 1000)
        if not batch:
            break
        after = batch[-1][0]
        for _, line in batch:
            if '"approval_' not in line:
                continue
            event = Event.from_line(line)
            approval_id = (event.approval or {}).get("approval_id")
            if event.run != run_number or not isinstance(approval_id, str):
                continue
            if event.kind == "approval_request":
                open_events[approval_id] = event
            elif event.kind == "approval_decision":
                open_events.pop(approval_id, None)
    left = list(asks)
    again: builtins.list[PermissionAsk] = []
    for event in open_events.values():
        for ask in left:
            if (ask.tool_id or ask.tool_name) == (event.tool_id or event.tool_name):
                left.remove(ask)
                again.append(ask)
                break
    return again
