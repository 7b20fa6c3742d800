"""What every command line shares: argument types that say what was wrong, and env defaults.

Flags override the environment, which overrides the built-in defaults. `env_default` is how a
flag takes its default from the environment: argparse runs a string default through the
argument's `type`, so a value from the environment is checked exactly as the flag's would be
(``CONTROL_PORT=70000`` is refused as ``--control-port 70000`` is)::

    parser.add_argument(
        "--control-port", type=port, default=env_default("CONTROL_PORT", default=17001),
        help="... (env CONTROL_PORT; default %(default)s)",
    )
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from typing import TypeVar, overload

from arp.config import DEFAULT_CONTROL_PORT, DEFAULT_PROXY_PORT

_T = TypeVar("_T")


class HelpFormatter(argparse.HelpFormatter):
    """argparse's own, told the terminal's width without `shutil`: argparse builds a formatter
    for every `add_argument` and, left to itself, imports shutil (with zlib, bz2 and lzma:
    0.7 MiB of an idle relay) to measure the terminal. Same rule as shutil: $COLUMNS, else the
    terminal of stdout, else 80."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        if width is None:
            width = _columns() - 2  # as argparse trims shutil's figure
        super().__init__(prog, indent_increment, max_help_position, width)


def _columns() -> int:
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns > 0:
        return columns
    stdout = sys.__stdout__
    try:
        return (os.get_terminal_size(stdout.fileno()).columns if stdout else 0) or 80
    except (AttributeError, ValueError, OSError):
        return 80


@overload
def env_default(*names: str, environ: Mapping[str, str] | None = None) -> str | None: ...


@overload
def env_default(*names: str, default: _T, environ: Mapping[str, str] | None = None) -> str | _T: ...


def env_default(
    *names: str, default: object = None, environ: Mapping[str, str] | None = None
) -> object:
    """The first of the environment variables `names` that is set and not empty (as a string,
    for argparse to convert with the flag's `type`), else `default`."""
    environ = os.environ if environ is None else environ
    for name in names:
        value = environ.get(name, "")
        if value.strip():
            return value
    return default


def add_relay_ports(parser: argparse.ArgumentParser, control: str, proxy: str) -> None:
    """``--control-port`` and ``--proxy-port``, as arps listens on them and arpc dials them
    (env CONTROL_PORT, PROXY_PORT): one definition for both programs, each saying in `control`
    and `proxy` what the port is to it."""
    for flag, env, default, what in (
        ("--control-port", "CONTROL_PORT", DEFAULT_CONTROL_PORT, control),
        ("--proxy-port", "PROXY_PORT", DEFAULT_PROXY_PORT, proxy),
    ):
        parser.add_argument(
            flag,
            type=port,
            default=env_default(env, default=default),
            help=f"{what} (env {env}; default %(default)s)",
        )


def port(text: str) -> int:
    """A TCP port, 0..65535 (0: any free port)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: a port is 0..65535")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0")
    return value


def port_range(text: str) -> range:
    """`20000-20999` (or one port) as a range."""
    low, sep, high = text.partition("-")
    try:
        start = int(low)
        stop = int(high) if sep else start
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port range like 20000-20999") from None
    if not (1 <= start <= stop <= 65535):
        raise argparse.ArgumentTypeError(f"{text!r}: ports must be 1..65535, low to high")
    return range(start, stop + 1)


def check_file(flag: str, path: str) -> None:
    """A file a flag names must be there and readable: a ValueError names the flag and file."""
    if not os.path.exists(path):
        raise ValueError(f"{flag} {path}: no such file")
    if not os.path.isfile(path):
        raise ValueError(f"{flag} {path}: not a file")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ValueError(f"{flag} {path}: cannot read it ({exc.strerror})") from None


class DeprecatedAlias(argparse.Action):
    """A hidden old spelling of a flag: it does what `new` does and leaves a note in
    `namespace.deprecations`, which the program logs once logging is set up
    (`log_deprecations`)."""

    def __init__(
        self,
        option_strings: list[str],
        dest: str,
        *,
        new: str,
        nargs: int | str | None = None,
        const: object = None,
        **kwargs: object,
    ) -> None:
        kwargs["help"] = argparse.SUPPRESS
        super().__init__(option_strings, dest, nargs=nargs, const=const, **kwargs)  # type: ignore[arg-type]
        self.new = new

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)
        notes: list[str] = list(getattr(namespace, "deprecations", None) or [])
        notes.append(f"{option_string} is deprecated and will go: use {self.new}")
        namespace.deprecations = notes


def log_deprecations(args: argparse.Namespace, log: logging.Logger) -> None:
    """One warning line per deprecated spelling the command line used."""
    for note in getattr(args, "deprecations", None) or []:
        log.warning("%s", note)
