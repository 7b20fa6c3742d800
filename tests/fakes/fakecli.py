"""What the fake agent CLIs share: reading directives from the prompt, and the run's pacing.

A prompt holds ``key=value`` words that steer the fake (anything else is ignored), so a test
says what should happen in the prompt it sends:

- ``events=N``      N pieces of agent text (default 2)
- ``sleep=S``       S seconds before each piece of text (default 0)
- ``exit=C``        exit with code C at the end (default 0)
- ``error=1``       the final result says the run failed
- ``nonjson=1``     print a line that is not JSON (and an empty line)
- ``stderr=1``      print two lines to stderr
- ``noid=1``        never name a conversation id (no init event)
- ``child=PATH``    start a grandchild that sleeps, writing its pid to PATH
- ``pidfile=PATH``  write the fake's own pid to PATH
- ``trap=int``      ignore SIGINT (``trap=int,term`` also SIGTERM) so cancel must escalate
- ``big=N``         one text line of N bytes
- ``fast=N``        N text events as fast as possible (benchmarks)
- ``nologin=1``     answer as the real CLI does when it is not logged in (docs/real-cli-notes.md)
- ``gate=PATH``     print nothing until PATH exists (at most GATE_WAIT seconds), so a test
                    can be watching before the output starts
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

GATE_WAIT = 60.0
"""The longest a fake waits for its ``gate=PATH`` file; then it goes on regardless."""


class Directives:
    def __init__(self, prompt: str) -> None:
        self.words: dict[str, str] = {}
        for word in prompt.split():
            if "=" in word:
                key, _, value = word.partition("=")
                self.words[key] = value

    def int(self, key: str, default: int) -> int:
        return int(self.words.get(key, default))

    def float(self, key: str, default: float) -> float:
        return float(self.words.get(key, default))

    def get(self, key: str) -> str | None:
        return self.words.get(key)


def emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def new_id() -> str:
    return str(uuid.uuid4())


def setup(d: Directives) -> None:
    """Side effects every fake honours before it prints anything."""
    gate = d.get("gate")
    if gate:
        deadline = time.monotonic() + GATE_WAIT
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.02)
    trap = d.get("trap") or ""
    if "int" in trap:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if "term" in trap:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pidfile = d.get("pidfile")
    if pidfile:
        with open(pidfile, "w") as f:
            f.write(str(os.getpid()))
    child = d.get("child")
    if child:
        proc = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)"],
            stdin=subprocess.DEVNULL,
        )
        with open(child, "w") as f:
            f.write(str(proc.pid))
    if d.get("stderr"):
        sys.stderr.write("warning: fake stderr line one\nfake stderr line two\n")
        sys.stderr.flush()
    if d.get("nonjson"):
        sys.stdout.write("this line is not JSON\n\n")
        sys.stdout.flush()


def pieces(d: Directives) -> list[str]:
    """The agent text pieces, after the pacing the directives ask for."""
    fast = d.int("fast", 0)
    if fast:
        return [f"fast piece {i}" for i in range(fast)]
    out = []
    for i in range(d.int("events", 2)):
        out.append(f"piece {i}")
    return out


def pause(d: Directives) -> None:
    delay = d.float("sleep", 0.0)
    if delay:
        time.sleep(delay)


def big(d: Directives) -> str | None:
    size = d.int("big", 0)
    return "x" * size if size else None


def finish(d: Directives) -> None:
    sys.stdout.flush()
    sys.exit(d.int("exit", 0))


def answer_version(argv: list[str], text: str) -> None:
    """``<cli> --version``: print the version line as the real CLI does, and exit."""
    if argv == ["--version"]:
        print(text, flush=True)
        sys.exit(0)


def flag_value(argv: list[str], flag: str) -> str | None:
    if flag in argv:
        i = argv.index(flag)
        if i + 1 < len(argv):
            return argv[i + 1]
    return None
