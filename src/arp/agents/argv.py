"""How one run of an agent CLI becomes its command line, and why nothing in it is a stray flag.

A request's options (`RunSpec`) are checked here before they reach any argv, and the three
builders below are the only code that writes one:

- Free text (a prompt, a system prompt, a permission mode) may hold any character but NUL and
  lone UTF-16 surrogates (they cannot be passed to a process).
- A model name is one word: no whitespace or control characters, never starting with ``-``.
- A conversation id is letters, digits and ``. _ : -``, starting with a letter or digit.
- A tool name is a name (``Bash``, ``mcp__server__tool``, ``*``), optionally with a Claude rule
  in parentheses (``Bash(git log:*)``); never starting with ``-``.
- A prompt that starts with ``-`` is passed with one leading space, so no CLI's option parser
  can take it for a flag (a model does not mind the space); the variadic tool lists go last.

Each failed check is a `BadRequest` (400) naming the field. The command lines, as the CLIs
document them (the executors table in `arp.agents.executors` names each builder):

- Claude Code: ``claude -p <prompt> --output-format stream-json --verbose [--model M]
  [--resume ID] [--permission-mode default|acceptEdits|plan|bypassPermissions]
  [--allowedTools T …] [--disallowedTools T …] [--tools ""] [--max-turns N]
  [--append-system-prompt S]``; cwd is the project path.
- Codex: ``codex exec --json [-m M] [-C DIR] --skip-git-repo-check [-s read-only|workspace-write|
  danger-full-access] <prompt>``; a follow-up is ``codex exec --json --skip-git-repo-check resume
  <thread_id> <prompt>``; cwd is the project path.
- Gemini CLI: ``gemini -p <prompt> --output-format stream-json [-m M] [--approval-mode
  default|auto_edit|yolo] [--allowed-tools T …] [--resume <session_id>]``; cwd is the project path.

Attachments (`arp.agents.attachments`): Claude ``--add-dir <their folder>`` and the prompt as a
stream-json user message with image blocks (``--input-format stream-json``); Codex ``-i <image>``
each (before ``--skip-git-repo-check``, which ends the variadic list); Gemini
``--include-directories <their folder>`` and an ``@<path>`` include per attachment.

Every child gets stdin from /dev/null (Codex reads a prompt from stdin when it has one), except
a run whose prompt goes over stdin (ask mode; Claude with attachments).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from arp.agents.attachments import StoredAttachment, folder_of
from arp.agents.errors import BadRequest


@dataclass(frozen=True, slots=True)
class RunSpec:
    """What one run of an agent CLI is asked to do (checked by `Executor.prepare`)."""

    prompt: str
    model: str | None = None
    project_path: str | None = None
    permission_mode: str | None = None
    """Once prepared, the executor's own value (see `Executor.permission_value`)."""
    allowed_tools: tuple[str, ...] = ()
    disallowed_tools: tuple[str, ...] = ()
    no_tools: bool = False
    max_turns: int | None = None
    append_system_prompt: str | None = None
    resume_id: str | None = None
    """The CLI's own conversation id to continue (Claude session, Codex thread, Gemini session)."""
    ask: bool = False
    """``permissionMode: "ask"``: the CLI is driven over its stdio protocol (`arp.agents.ask`)
    and the prompt goes there, not into the argv."""
    attachments: tuple[StoredAttachment, ...] = ()
    """This run's stored attachments (`arp.agents.attachments`): each builder passes them the
    way its CLI understands (the prompt already names their paths)."""

    @property
    def images(self) -> list[str]:
        return [item.path for item in self.attachments if item.is_image]

    @property
    def attach_dir(self) -> str | None:
        return folder_of(self.attachments)

    def asked(self) -> dict[str, bool]:
        """Which optional fields this spec sets (an executor must honour each)."""
        return {
            "model": self.model is not None,
            "permission_mode": self.permission_mode is not None,
            "allowed_tools": bool(self.allowed_tools),
            "disallowed_tools": bool(self.disallowed_tools),
            "no_tools": self.no_tools,
            "max_turns": self.max_turns is not None,
            "append_system_prompt": self.append_system_prompt is not None,
        }

    def check(self) -> None:
        """Every rule of the module docstring; the first one broken is a `BadRequest`."""
        check_text("prompt", self.prompt)
        if self.append_system_prompt is not None:
            check_text("appendSystemPrompt", self.append_system_prompt)
        if self.permission_mode is not None:
            check_text("permissionMode", self.permission_mode)
        if self.model is not None:
            check_word("model", self.model)
        if self.resume_id is not None:
            check_id(self.resume_id)
        for name, tools in (
            ("allowedTools", self.allowed_tools),
            ("disallowedTools", self.disallowed_tools),
        ):
            for tool in tools:
                check_tool(name, tool)


_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,255}", re.ASCII)
_TOOL: Final = re.compile(
    # A name (`Bash`, `mcp__server__tool`, `*`), optionally with a Claude rule in parentheses:
    # `Bash(git log:*)`, `Read(./src/**)`, `WebFetch(domain:example.com)`.
    r"[A-Za-z0-9_*][A-Za-z0-9_.:*/-]{0,255}(?:\([A-Za-z0-9_.:*/~@=+%, -]{0,512}\))?",
    re.ASCII,
)
_MAX_WORD: Final = 256


def check_text(name: str, value: str) -> None:
    """Free text for a CLI (a prompt): any characters but NUL and lone surrogates."""
    if "\x00" in value:
        raise BadRequest(f"{name!r} must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(
            f"{name!r} holds a lone UTF-16 surrogate (half of a character); send valid text"
        ) from None


def check_word(name: str, value: str) -> None:
    """One word passed as an option's value (a model name)."""
    check_text(name, value)
    if value.startswith("-") or len(value) > _MAX_WORD:
        raise BadRequest(f"{name!r} must not start with '-' (nor be that long): {value[:80]!r}")
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise BadRequest(f"{name!r} must be one word without spaces or control characters")


def check_id(value: str) -> None:
    if not _ID.fullmatch(value):
        raise BadRequest(
            f"conversation id {value[:80]!r} is not one: letters, digits and . _ : - only, "
            "starting with a letter or digit"
        )


def check_tool(name: str, value: str) -> None:
    if not _TOOL.fullmatch(value):
        raise BadRequest(
            f"{name!r} item {value[:80]!r} is not a tool name or rule: use a name such as "
            "Read or mcp__server__tool, optionally with a rule in parentheses such as "
            "Bash(git log:*); never starting with '-'"
        )


def prompt_arg(prompt: str) -> str:
    """The prompt as an argument: one starting with ``-`` gets a leading space, so no CLI's
    option parser can take it for a flag (a model does not mind the space)."""
    return " " + prompt if prompt.startswith("-") else prompt


def build_claude(binary: str, spec: RunSpec) -> list[str]:
    # Attachments: their folder is one its tools may read (--add-dir, variadic: a flag follows
    # it), and the prompt goes as a stream-json user message holding the images as blocks.
    add_dir = ["--add-dir", spec.attach_dir] if spec.attach_dir else []
    if spec.ask or spec.attachments:
        # The prompt goes over stdin after the initialize request (arp.agents.ask.ClaudeAsk).
        argv = [binary, "-p", *add_dir, "--input-format", "stream-json"]
        argv += ["--output-format", "stream-json", "--verbose"]
        if not spec.ask:
            return argv + _claude_options(spec, spec.permission_mode)
        argv += ["--permission-prompt-tool", "stdio"]
        return argv + _claude_options(spec, "default")
    argv = [binary, "-p", prompt_arg(spec.prompt), "--output-format", "stream-json", "--verbose"]
    return argv + _claude_options(spec, spec.permission_mode)


def claude_stream_input(spec: RunSpec) -> bool:
    """Whether a Claude run takes its prompt over stdin (ask mode, or images to send)."""
    return spec.ask or bool(spec.attachments)


def _claude_options(spec: RunSpec, permission_mode: str | None) -> list[str]:
    argv: list[str] = []
    if spec.model:
        argv += ["--model", spec.model]
    if spec.resume_id:
        argv += ["--resume", spec.resume_id]
    if permission_mode:
        argv += ["--permission-mode", permission_mode]
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
    if spec.ask:
        # JSON-RPC over stdio; thread, model and prompt go there (arp.agents.ask_rpc).
        return [binary, "app-server"]
    if spec.resume_id:
        # `exec resume` keeps the thread but not the sandbox: pass -s before `resume` (an
        # exec option) and -m after it, or a follow-up of an acceptEdits session runs
        # read-only and ignores its model (seen with codex 0.169; docs/real-cli-notes.md).
        argv = [binary, "exec", "--json", "--skip-git-repo-check"]
        if spec.permission_mode:
            argv += ["-s", spec.permission_mode]
        images = _codex_images(spec)
        if images:
            # -i is variadic: the flag after it ends its list (accepted after `resume` too).
            argv.remove("--skip-git-repo-check")
            images.append("--skip-git-repo-check")
        argv.append("resume")
        if spec.model:
            argv += ["-m", spec.model]
        return [*argv, *images, spec.resume_id, prompt_arg(spec.prompt)]
    argv = [binary, "exec", "--json"]
    if spec.model:
        argv += ["-m", spec.model]
    if spec.project_path:
        argv += ["-C", spec.project_path]
    argv += _codex_images(spec)  # -i is variadic: the flag after it ends its list
    argv.append("--skip-git-repo-check")
    if spec.permission_mode:
        argv += ["-s", spec.permission_mode]
    argv.append(prompt_arg(spec.prompt))
    return argv


def _codex_images(spec: RunSpec) -> list[str]:
    argv: list[str] = []
    for path in spec.images:
        argv += ["-i", path]
    return argv


def _gemini_dirs(spec: RunSpec) -> list[str]:
    """The attachments' folder in the workspace, so @includes and read_file may reach it."""
    return ["--include-directories", spec.attach_dir] if spec.attach_dir else []


def gemini_prompt(spec: RunSpec) -> str:
    """The prompt with an ``@path`` include per attachment (Gemini reads them in itself)."""
    if not spec.attachments:
        return spec.prompt
    return spec.prompt + "\n\n" + " ".join("@" + item.path for item in spec.attachments)


def build_gemini(binary: str, spec: RunSpec) -> list[str]:
    if spec.ask:
        # ACP over stdio; the prompt and the conversation to resume go there
        # (arp.agents.ask_rpc.GeminiAcp).
        argv = [binary, "--acp", "--approval-mode", "default", *_gemini_dirs(spec)]
        if spec.model:
            argv += ["-m", spec.model]
        if spec.allowed_tools:
            argv += ["--allowed-tools", *spec.allowed_tools]
        return argv
    argv = [binary, "-p", prompt_arg(gemini_prompt(spec)), *_gemini_dirs(spec)]
    argv += ["--output-format", "stream-json"]
    if spec.model:
        argv += ["-m", spec.model]
    if spec.permission_mode:
        argv += ["--approval-mode", spec.permission_mode]
    if spec.resume_id:
        argv += ["--resume", spec.resume_id]
    if spec.allowed_tools:
        argv += ["--allowed-tools", *spec.allowed_tools]
    return argv
