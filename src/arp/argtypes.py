"""Argument types shared by every command line: each says what was wrong with the value."""

from __future__ import annotations

import argparse


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
