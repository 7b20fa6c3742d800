"""The executors table: every fact ARP knows about each agent CLI, in one place.

The agent list is this table's keys (`AGENTS`, and the same names as the type `AgentName`):
history, the MCP tools, the remote protocol, arpc's flags and the console (``GET /api/agents``)
read it from here. An `Executor` knows how to find its binary, which options it honours
(`prepare` checks a `RunSpec` against them and maps its permission mode), which builder in
`arp.agents.argv` writes its command line, and which parser reads its stream
(`arp.agents.events`). So one prompt goes `StartRequest.run_spec` → `Executor.prepare` →
`Executor.build` and nowhere else.

Which executor honours which `RunSpec` option (`Executor.options`; asking an executor for an
option it does not honour is a 400, so an adapter checks ``"max_turns" in executor.options``):

======================  ======  =====  ======
option                  claude  codex  gemini
======================  ======  =====  ======
model                   yes     yes    yes
permission_mode         yes     yes    yes
allowed_tools           yes     no     yes
disallowed_tools        yes     no     no
no_tools                yes     no     no
max_turns               yes     no     no
append_system_prompt    yes     no     no
resume (follow-ups)     yes     yes    yes
======================  ======  =====  ======

``permission_mode`` takes the executor's own values or Claude's names, mapped:
``default`` → codex (no -s flag) / gemini ``default``; ``plan`` → codex ``read-only`` / gemini
``default``; ``acceptEdits`` → codex ``workspace-write`` / gemini ``auto_edit``;
``bypassPermissions`` → codex ``danger-full-access`` / gemini ``yolo``. ``ask`` (any executor
with an `Executor.ask` protocol: all three) drives the CLI over its stdio protocol so that
a person decides each tool use it would prompt for (`arp.agents.ask`, `arp.agents.approvals`).

Binary lookup, first hit wins: the executor's flag (``--command-path`` for claude as in the
original, ``--codex-path``, ``--gemini-path``; a set flag that does not point at an executable
is an error, never silently skipped), then ``PATH``, then the usual install places below.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

from arp.agents.argv import RunSpec, build_claude, build_codex, build_gemini, claude_stream_input
from arp.agents.ask import AskProtocol, ClaudeAsk
from arp.agents.ask_rpc import CodexAppServer, GeminiAcp
from arp.agents.errors import BadRequest
from arp.agents.events import ClaudeParser, CodexParser, GeminiParser, StreamParser
from arp.agents.names import AGENTS as AGENTS
from arp.agents.names import AgentName as AgentName

ASK: Final = "ask"
"""The permission mode in which a person decides each tool use (`arp.agents.ask`)."""


OPTIONS: Final[frozenset[str]] = frozenset(
    {
        "model",
        "permission_mode",
        "allowed_tools",
        "disallowed_tools",
        "no_tools",
        "max_turns",
        "append_system_prompt",
    }
)
"""The optional `RunSpec` fields an executor may honour."""


@dataclass(frozen=True, slots=True)
class Executor:
    """One agent CLI."""

    name: str
    display_name: str
    """How people call it (the console shows it)."""
    binary: str
    """The file name looked for on PATH and in the install places."""
    path_flag: str
    """The arpc flag that names the binary explicitly."""
    install_places: tuple[str, ...]
    """Where the binary usually lives besides PATH (``~`` is expanded)."""
    options: frozenset[str]
    """The optional `RunSpec` fields this CLI honours."""
    permission_modes: Mapping[str, str | None]
    """Accepted ``permission_mode`` values (lower-cased) → the CLI's value (None: no flag)."""
    build: Callable[[str, RunSpec], list[str]]
    """(binary, spec) → argv."""
    parser: Callable[[], StreamParser]
    env: Mapping[str, str] = field(default_factory=dict)
    """Variables added to arpc's environment for this CLI (besides ``ARP_SESSION_ID``)."""
    ask: Callable[[RunSpec], AskProtocol] | None = None
    """How ``permissionMode: "ask"`` talks to this CLI (None: it cannot ask yet, a 400)."""
    stream_input: Callable[[RunSpec], bool] | None = None
    """Whether a run outside ask mode also takes its prompt over stdin, through the `ask`
    protocol (Claude with attachments: images go as content blocks)."""

    def stdio(self, spec: RunSpec) -> AskProtocol | None:
        """The stdio protocol a run of ``spec`` speaks (None: stdin is /dev/null)."""
        if self.ask is None:
            return None
        if spec.ask or (self.stream_input is not None and self.stream_input(spec)):
            return self.ask(spec)
        return None

    def permission_value(self, mode: str) -> str | None:
        """The CLI's value for ``mode``; a value this CLI does not know is a 400."""
        key = mode.strip().lower()
        if key not in self.permission_modes:
            accepted = ", ".join(sorted({*self.permission_modes, *([ASK] if self.ask else [])}))
            raise BadRequest(
                f"permission mode {mode!r} is not known to {self.name}; use one of: {accepted}"
            )
        return self.permission_modes[key]

    def prepare(self, spec: RunSpec) -> RunSpec:
        """``spec`` checked (`RunSpec.check`) and honoured by this CLI, its permission mode
        mapped to the CLI's own value; a 400 naming what is wrong otherwise."""
        unsupported = sorted(
            name for name, on in spec.asked().items() if on and name not in self.options
        )
        if unsupported:
            raise BadRequest(f"{self.name} does not support: {', '.join(unsupported)}")
        spec.check()
        if spec.permission_mode is None:
            return spec
        if spec.permission_mode.strip().lower() == ASK:
            if self.ask is None:
                raise BadRequest(f"{self.name} cannot ask for approvals (permissionMode ask) yet")
            return replace(spec, permission_mode=None, ask=True)
        return replace(spec, permission_mode=self.permission_value(spec.permission_mode))

    def candidates(self, configured: str | None) -> list[str]:
        """Where the binary is looked for, in order (for lookup and for the error message)."""
        if configured:
            return [configured]
        places = [f"{self.binary} on PATH"]
        places.extend(self.install_places)
        return places

    def find_binary(self, configured: str | None) -> str:
        """The binary's path; a 400 naming every place looked at when there is none."""
        if configured:
            path = Path(configured).expanduser()
            if path.is_file() and os.access(path, os.X_OK):
                return str(path)
            raise BadRequest(
                f"{self.name} binary not found: {self.path_flag} {configured} "
                "is not an executable file"
            )
        found = shutil.which(self.binary)
        if found:
            return found
        for place in self.install_places:
            path = Path(os.path.expandvars(place)).expanduser()
            if path.is_file() and os.access(path, os.X_OK):
                return str(path)
        looked = ", ".join(self.candidates(None))
        raise BadRequest(
            f"{self.name} binary not found: looked for {looked}; "
            f"install it or pass {self.path_flag}"
        )


def _npm_places(binary: str) -> tuple[str, ...]:
    return (
        f"$NPM_CONFIG_PREFIX/bin/{binary}",
        f"~/.npm-global/bin/{binary}",
        f"~/.local/bin/{binary}",
        f"~/.volta/bin/{binary}",
        f"/usr/local/bin/{binary}",
        f"/opt/homebrew/bin/{binary}",
    )


EXECUTORS: Final[dict[str, Executor]] = {
    "claude": Executor(
        name="claude",
        display_name="Claude",
        binary="claude",
        path_flag="--command-path",
        install_places=("~/.claude/local/claude", *_npm_places("claude")),
        options=OPTIONS,
        permission_modes={
            "default": "default",
            "acceptedits": "acceptEdits",
            "plan": "plan",
            "bypasspermissions": "bypassPermissions",
        },
        build=build_claude,
        parser=ClaudeParser,
        ask=ClaudeAsk,
        stream_input=claude_stream_input,
    ),
    "codex": Executor(
        name="codex",
        display_name="Codex",
        binary="codex",
        path_flag="--codex-path",
        install_places=_npm_places("codex"),
        options=frozenset({"model", "permission_mode"}),
        permission_modes={
            "default": None,
            "plan": "read-only",
            "read-only": "read-only",
            "acceptedits": "workspace-write",
            "workspace-write": "workspace-write",
            "bypasspermissions": "danger-full-access",
            "danger-full-access": "danger-full-access",
        },
        build=build_codex,
        parser=CodexParser,
        ask=CodexAppServer,
    ),
    "gemini": Executor(
        name="gemini",
        display_name="Gemini",
        binary="gemini",
        path_flag="--gemini-path",
        install_places=_npm_places("gemini"),
        options=frozenset({"model", "permission_mode", "allowed_tools"}),
        permission_modes={
            "default": "default",
            "plan": "default",
            "acceptedits": "auto_edit",
            "auto_edit": "auto_edit",
            "bypasspermissions": "yolo",
            "yolo": "yolo",
        },
        build=build_gemini,
        parser=GeminiParser,
        ask=GeminiAcp,
    ),
}


if tuple(EXECUTORS) != AGENTS:  # pragma: no cover - a table edit without the names
    raise RuntimeError(f"arp.agents.names {AGENTS} does not match the table {tuple(EXECUTORS)}")


def get_executor(name: str) -> Executor:
    """The executor called ``name`` in any case (``"Claude"`` works); a 400 otherwise."""
    executor = EXECUTORS.get(name.strip().lower()) if isinstance(name, str) else None
    if executor is None:
        known = ", ".join(EXECUTORS)
        raise BadRequest(f"unknown executor {name!r}; use one of: {known}")
    return executor
