"""A bound on how deeply JSON nests, checked before the decoder sees the text.

Python's JSON decoder recurses once per ``[`` or ``{``: a small body of 2,000 opening brackets
exhausts the interpreter's recursion limit and raises `RecursionError`, which is no
`ValueError`, so it escapes the handlers that answer bad JSON and leaves a traceback (and a
500) behind. Every decoder of untrusted JSON (control frames, command mode's request bodies)
calls `check_json_depth` first, so nesting past `Limits.max_json_depth` is an ordinary
"bad JSON" error with a message that says so.

The check is cheap where it matters: a text with fewer opening brackets than the bound cannot
nest past it, and counting them runs at C speed; only a text with many brackets is scanned,
with strings skipped (a bracket inside a string does not nest), by one regular expression.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from arp.config import Limits

DEFAULT_MAX_DEPTH = Limits().max_json_depth

# A JSON string (escapes included; unrolled so no backtracking per character), or a bracket.
_TOKENS_BYTES = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
_TOKENS_TEXT = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
_OPENING = frozenset(("[", "{", b"[", b"{"))
_CLOSING = frozenset(("]", "}", b"]", b"}"))


class JsonTooDeep(ValueError):
    """JSON nests deeper than the bound; a `ValueError`, as the decoder's own errors are."""


def check_json_depth(data: bytes | str, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
    """Raise `JsonTooDeep` if `data`, read as JSON, nests arrays and objects past `max_depth`.

    Text that is not valid JSON may pass or fail here; the decoder judges it next.
    """
    tokens: Iterator[str | bytes]
    if isinstance(data, bytes):
        if data.count(b"[") + data.count(b"{") <= max_depth:
            return
        tokens = (m.group() for m in _TOKENS_BYTES.finditer(data))
    else:
        if data.count("[") + data.count("{") <= max_depth:
            return
        tokens = (m.group() for m in _TOKENS_TEXT.finditer(data))
    depth = 0
    for token in tokens:
        if token in _OPENING:
            depth += 1
            if depth > max_depth:
                raise JsonTooDeep(
                    f"JSON nested deeper than {max_depth} levels of arrays and objects (the limit)"
                )
        elif token in _CLOSING:
            depth -= 1
