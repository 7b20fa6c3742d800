"""The executors table: every fact ARP knows about each agent CLI, in one place.

An `Executor` knows how to find its binary, how to build its command line from a `RunSpec`, and
which parser reads its stream (`arp.agents.events`). The command lines, as the CLIs document them:

- Claude Code: ``claude -p <prompt> --output-format stream-json --verbose [--model M]
  [--resume ID] [--permission-mode default|acceptEdits|plan|bypassPermissions]
  [--allowedTools T …] [--disallowedTools T …] [--tools ""] [--max-turns N]
  [--append-system-prompt S]``; cwd is the project path.
- Codex: ``codex exec --json [-m M] [-C DIR] --skip-git-repo-check [-s read-only|workspace-write|
  danger-full-access] <prompt>``; a follow-up is ``codex exec --json --skip-git-repo-check resume
  <thread_id> <prompt>``; cwd is the project path.
- Gemini CLI: ``gemini -p <prompt> --output-format stream-json [-m M] [--approval-mode
  default|auto_edit|yolo] [--allowed-tools T …] [--resume <session_id>]``; cwd is the project path.

Every child gets stdin from /dev/null (Codex reads a prompt from stdin when it has one). A prompt
that starts with ``-`` is passed with one leading space, so it can never be read as an option.

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
``bypassPermissions`` → codex ``danger-full-access`` / gemini ``yolo``.

Binary lookup, first hit wins: the executor's flag (``--command-path`` for claude as in the
original, ``--codex-path``, ``--gemini-path``; a set flag that does not point at an executable
is an error, never silently skipped), then ``PATH``, then the usual install places below.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from arp.agents.errors import BadRequest
from arp.agents.events import ClaudeParser, CodexParser, GeminiParser, StreamParser

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
class RunSpec:
    """What one run of an agent CLI is asked to do (the executor's already-checked options)."""

    prompt: str
    model: str | None = None
    project_path: str | None = None
    permission_mode: str | None = None
    """Already mapped to the executor's own value (see `Executor.permission_value`)."""
    allowed_tools: tuple[str, ...] = ()
    disallowed_tools: tuple[str, ...] = ()
    no_tools: bool = False
    max_turns: int | None = None
    append_system_prompt: str | None = None
    resume_id: str | None = None
    """The CLI's own conversation id to continue (Claude session, Codex thread, Gemini session)."""


@dataclass(frozen=True, slots=True)
class Executor:
    """One agent CLI."""

    name: str
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

    def permission_value(self, mode: str) -> str | None:
        """The CLI's value for ``mode``; a value this CLI does not know is a 400."""
        key = mode.strip().lower()
        if key not in self.permission_modes:
            accepted = ", ".join(sorted({m for m in self.permission_modes}))
            raise BadRequest(
                f"permission mode {mode!r} is not known to {self.name}; use one of: {accepted}"
            )
        return self.permission_modes[key]

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


def _prompt_arg(prompt: str) -> str:
    """The prompt as an argument: one starting with ``-`` gets a leading space, so no CLI's
    option parser can take it for a flag (a model does not mind the space)."""
    return " " + prompt if prompt.startswith("-") else prompt


def build_claude(binary: str, spec: RunSpec) -> list[str]:
    argv = [binary, "-p", _prompt_arg(spec.prompt), "--output-format", "stream-json", "--verbose"]
    if spec.model:
        argv += ["--model", spec.model]
    if spec.resume_id:
        argv += ["--resume", spec.resume_id]
    if spec.permission_mode:
        argv += ["--permission-mode", spec.permission_mode]
    if spec.no_tools:
        argv += ["--tools", ""]
    if spec.max_turns is not None:
        argv += ["--max-turns", str(spec.max_turns)]
    if spec.append_system_prompt:
        argv += ["--append-system-prompt", spec.append_system_prompt]
    # The variadic tool lists go last, so nothing after them is taken for a tool name.
    if spec.disallowed_tools:
        argv += ["--disallowedTools", *spec.disallowed_tools]
    if spec.allowed_tools:
        argv += ["--allowedTools", *spec.allowed_tools]
    return argv


def build_codex(binary: str, spec: RunSpec) -> list[str]:
    if spec.resume_id:
        # `exec resume` keeps the thread but not the sandbox: pass -s before `resume` (an
        # exec option) and -m after it, or a follow-up of an acceptEdits session runs
        # read-only and ignores its model (seen with codex 0.169; docs/real-cli-notes.md).
        argv = [binary, "exec", "--json", "--skip-git-repo-check"]
        if spec.permission_mode:
            argv += ["-s", spec.permission_mode]
        argv.append("resume")
        if spec.model:
            argv += ["-m", spec.model]
        return [*argv, spec.resume_id, _prompt_arg(spec.prompt)]
    argv = [binary, "exec", "--json"]
    if spec.model:
        argv += ["-m", spec.model]
    if spec.project_path:
        argv += ["-C", spec.project_path]
    argv.append("--skip-git-repo-check")
    if spec.permission_mode:
        argv += ["-s", spec.permission_mode]
    argv.append(_prompt_arg(spec.prompt))
    return argv


def build_gemini(binary: str, spec: RunSpec) -> list[str]:
    argv = [binary, "-p", _prompt_arg(spec.prompt), "--output-format", "stream-json"]
    if spec.model:
        argv += ["-m", spec.model]
    if spec.permission_mode:
        argv += ["--approval-mode", spec.permission_mode]
    if spec.resume_id:
        argv += ["--resume", spec.resume_id]
    if spec.allowed_tools:
        argv += ["--allowed-tools", *spec.allowed_tools]
    return argv


EXECUTORS: Final[dict[str, Executor]] = {
    "claude": Executor(
        name="claude",
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
    ),
    "codex": Executor(
        name="codex",
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
    ),
    "gemini": Executor(
        name="gemini",
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
    ),
}


def get_executor(name: str) -> Executor:
    """The executor called ``name`` in any case (``"Claude"`` works); a 400 otherwise."""
    executor = EXECUTORS.get(name.strip().lower()) if isinstance(name, str) else None
    if executor is None:
        known = ", ".join(EXECUTORS)
        raise BadRequest(f"unknown executor {name!r}; use one of: {known}")
    return executor
