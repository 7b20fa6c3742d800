"""Which agent CLIs this machine can run, and what to say when one cannot run.

- `AgentCatalog` finds each executor's binary (`Executor.find_binary`: the flag, PATH, the
  install places) and asks it ``--version`` within `Timeouts.version_probe`; a version is asked
  again only when the binary's path or modification time changed, so `GET /api/agents` stays
  cheap and still notices a CLI installed while arpc runs.
- `INSTALL` is the command that installs each CLI; `login_advice` turns a run that failed
  because the CLI is not logged in into one error saying so, with what to do.

The messages matched are the CLIs' own (docs/real-cli-notes.md, "Not logged in"): Claude Code
2.1 answers a prompt with a result ``Not logged in · Please run /login`` (an API key it rejects:
``Invalid API key · Please run /login``); Gemini CLI 0.61 prints ``Please set an Auth method in
your …/settings.json or specify one of the following environment variables …`` and exits;
Codex says ``Not logged in`` / asks for ``codex login``, or the API answers 401.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from arp.agents.errors import BadRequest
from arp.agents.executors import EXECUTORS, Executor

INSTALL: Final[Mapping[str, str]] = {
    "claude": "npm install -g @anthropic-ai/claude-code",
    "codex": "npm install -g @openai/codex",
    "gemini": "npm install -g @google/gemini-cli",
}
"""How to install each CLI (every one is an npm package; Node.js 18 or later)."""

_LOGIN: Final[Mapping[str, tuple[tuple[str, ...], str]]] = {
    "claude": (
        ("not logged in", "please run /login", "invalid api key"),
        "open a terminal on the computer running arpc, run `claude` and type /login "
        "(or give arpc an ANTHROPIC_API_KEY), then send the prompt again",
    ),
    "codex": (
        ("not logged in", "codex login", "401 unauthorized", "missing bearer"),
        "open a terminal on the computer running arpc and run `codex login` "
        "(or give arpc an OPENAI_API_KEY), then send the prompt again",
    ),
    "gemini": (
        ("please set an auth method", "gemini_api_key"),
        "open a terminal on the computer running arpc, run `gemini` once and choose how to sign "
        "in (or give arpc a GEMINI_API_KEY), then send the prompt again",
    ),
}
"""Per CLI: lower-case fragments of its not-logged-in message, and what the person should do."""

_VERSION_OUTPUT: Final = 4096
"""The most of a ``--version`` answer kept (its first line is shown)."""


def needs_login(agent: str, text: str | None) -> bool:
    """Whether `text` (a line or result the CLI printed) says it is not logged in."""
    entry = _LOGIN.get(agent)
    if entry is None or not text:
        return False
    lowered = text.lower()
    return any(fragment in lowered for fragment in entry[0])


def login_advice(agent: str, error: str | None) -> str | None:
    """A failed run's error, saying once that the CLI is not logged in and what to do."""
    if error is None or not needs_login(agent, error) or "is not logged in" in error:
        return error
    name = EXECUTORS[agent].display_name if agent in EXECUTORS else agent
    return f"{name} is not logged in on this computer ({error.strip()}): {_LOGIN[agent][1]}."


@dataclass(frozen=True, slots=True)
class AgentInfo:
    name: str
    display_name: str
    found: bool
    path: str | None
    version: str | None
    """The first line of ``<cli> --version``; None when it did not answer in time."""
    install: str
    problem: str | None = None
    """Why it was not found (every place looked at), or why its version is unknown."""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "display_name": self.display_name,
            "found": self.found,
            "path": self.path,
            "version": self.version,
            "install": self.install,
            "problem": self.problem,
        }

    def line(self) -> str:
        """What arpc prints about this CLI at start."""
        if self.found:
            version = self.version or f"version unknown: {self.problem}"
            return f"🧰 {self.name}: {self.path} ({version})"
        return f"🧰 {self.name}: not found; install it with `{self.install}` ({self.problem})"


class AgentCatalog:
    """What each agent CLI is on this machine; versions cached by (path, mtime)."""

    def __init__(self, binaries: Mapping[str, str | None], version_timeout: float) -> None:
        self.binaries = dict(binaries)
        self.version_timeout = version_timeout
        self._versions: dict[tuple[str, float], tuple[str | None, str | None]] = {}

    async def describe(self) -> list[AgentInfo]:
        """Every executor in the table's order, probed concurrently."""
        return list(await asyncio.gather(*(self._probe(e) for e in EXECUTORS.values())))

    async def _probe(self, executor: Executor) -> AgentInfo:
        install = INSTALL.get(executor.name, "")
        try:
            path = executor.find_binary(self.binaries.get(executor.name))
        except BadRequest as exc:
            return AgentInfo(
                executor.name, executor.display_name, False, None, None, install, exc.message
            )
        try:
            key = (path, os.stat(path).st_mtime)
        except OSError as exc:
            return AgentInfo(
                executor.name, executor.display_name, False, None, None, install, str(exc)
            )
        if key not in self._versions:
            self._versions = {k: v for k, v in self._versions.items() if k[0] != path}
            self._versions[key] = await self._version(path)
        version, problem = self._versions[key]
        return AgentInfo(
            executor.name, executor.display_name, True, path, version, install, problem
        )

    async def _version(self, path: str) -> tuple[str | None, str | None]:
        """(first line of ``path --version``, None) or (None, why not), within the deadline."""
        try:
            child = await asyncio.create_subprocess_exec(
                path,
                "--version",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            return None, f"cannot run it: {exc.strerror or exc}"
        try:
            async with asyncio.timeout(self.version_timeout):
                output, _ = await child.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, 9)
            with contextlib.suppress(Exception):
                await child.wait()
            return None, f"`--version` did not answer within {self.version_timeout:g} s"
        text = output[:_VERSION_OUTPUT].decode("utf-8", errors="replace")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        # Some CLIs print warnings first (Codex under /tmp): the version is the last line.
        if child.returncode != 0 or not lines:
            return None, f"`--version` exited with code {child.returncode}"
        return lines[-1][:200], None
