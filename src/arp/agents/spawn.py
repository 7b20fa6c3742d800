"""Starting an agent CLI without stalling the event loop.

The loop's own subprocess support (uvloop's libuv spawn) forks in the loop thread, and a fork
copies the page tables of the whole arpc process: with a hundred sessions' output in memory
that took 10 to 60 ms each, during which no request was answered. Here `subprocess.Popen` runs
in a worker thread (CPython starts the child with vfork where it can, so even that thread waits
only microseconds), the pipes become ordinary `asyncio.StreamReader`s, and the exit is observed
through a pidfd where Linux has one (a worker thread's `wait` elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import subprocess
from collections.abc import Mapping, Sequence
from typing import IO, Protocol


class Child(Protocol):
    """What the session manager uses of a started child (`asyncio.subprocess.Process` has it)."""

    pid: int
    stdin: asyncio.StreamWriter | None
    """Set when started with ``stdin=subprocess.PIPE`` (``ask`` mode talks to the CLI)."""
    stdout: asyncio.StreamReader | None
    stderr: asyncio.StreamReader | None

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...


class _ThreadChild:
    """A child started by Popen in a worker thread, its exit seen through a pidfd."""

    def __init__(
        self, popen: subprocess.Popen[bytes], stdout: asyncio.StreamReader,
        stderr: asyncio.StreamReader, stdin: asyncio.StreamWriter | None = None,
    ) -> None:  # fmt: skip
        self._popen = popen
        self.pid = popen.pid
        self.stdin: asyncio.StreamWriter | None = stdin
        self.stdout: asyncio.StreamReader | None = stdout
        self.stderr: asyncio.StreamReader | None = stderr
        self._exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._watch()

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    async def wait(self) -> int:
        """The exit code, once the child has exited (reaped, so no zombie is left)."""
        return await asyncio.shield(self._exited)

    def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            # No pidfd (older kernels, other systems): a worker thread waits instead.
            future = loop.run_in_executor(None, self._popen.wait)
            future.add_done_callback(lambda f: self._set(f.result()))
            return

        def exited() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            code = self._popen.poll()
            if code is None:  # pragma: no cover - the pidfd is readable only after exit
                code = self._popen.wait()
            self._set(code)

        loop.add_reader(pidfd, exited)

    def _set(self, code: int) -> None:
        if not self._exited.done():
            self._exited.set_result(code)


class _PipeProtocol(asyncio.StreamReaderProtocol):
    def eof_received(self) -> bool:
        super().eof_received()
        return False  # close the transport, and with it the pipe, as soon as the child is done


async def _reader(pipe: IO[bytes], limit: int) -> asyncio.StreamReader:
    """A reader over `pipe`, whose fd gets exactly one owner.

    uvloop's pipe transport takes over the fd it is given (libuv closes it, later, when the
    transport closes), while `pipe`, Popen's file object, would close the same number again
    when collected: by then the number may belong to the next child's pipes, whose start then
    failed with 'Bad file descriptor'. So the transport gets a duplicate wrapped without
    ownership, and Popen's object closes its original now.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    fd = os.dup(pipe.fileno())
    pipe.close()
    unowned = io.FileIO(fd, "rb", closefd=False)  # the transport owns fd
    try:
        await loop.connect_read_pipe(lambda: _PipeProtocol(reader, loop=loop), unowned)
    except BaseException:
        os.close(fd)
        raise
    return reader


async def _writer(pipe: IO[bytes]) -> asyncio.StreamWriter:
    """A writer over `pipe` (the child's stdin), its fd owned once, as in `_reader`."""
    loop = asyncio.get_running_loop()
    fd = os.dup(pipe.fileno())
    pipe.close()
    unowned = io.FileIO(fd, "wb", closefd=False)  # the transport owns fd
    try:
        transport, protocol = await loop.connect_write_pipe(
            lambda: asyncio.streams.FlowControlMixin(loop=loop), unowned
        )
    except BaseException:
        os.close(fd)
        raise
    return asyncio.StreamWriter(transport, protocol, None, loop)


def loop_forks_in_its_thread(loop: asyncio.AbstractEventLoop) -> bool:
    """uvloop (libuv) forks in the loop thread; CPython's own loop starts children with
    vfork through Popen, which is already quick."""
    return type(loop).__module__.split(".")[0] == "uvloop"


async def spawn(
    argv: Sequence[str],
    *,
    cwd: str | os.PathLike[str] | None,
    env: Mapping[str, str] | None,
    limit: int,
    stdin: int = subprocess.DEVNULL,
) -> Child:
    """Start `argv` in a session (process group) of its own, stdout and stderr piped (stdin
    too with ``stdin=subprocess.PIPE``: `Child.stdin` is then a writer).

    Raises OSError (e.g. FileNotFoundError) as `Popen` does when the program cannot start.
    """
    if not loop_forks_in_its_thread(asyncio.get_running_loop()):
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            limit=limit,
        )
    popen = await asyncio.to_thread(
        subprocess.Popen,
        list(argv),
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        start_new_session=True,
    )
    try:
        assert popen.stdout is not None and popen.stderr is not None
        stdout = await _reader(popen.stdout, limit)
        stderr = await _reader(popen.stderr, limit)
        writer = await _writer(popen.stdin) if popen.stdin is not None else None
        return _ThreadChild(popen, stdout, stderr, writer)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, 9)
        await asyncio.to_thread(popen.wait)
        raise
