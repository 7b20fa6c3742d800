"""The data path compiled by mypyc, loaded only when it was built from exactly these sources.

Why: on a keep-alive or new-connection load, the Python between the system calls was about
40 % of arps' and arpc's own CPU per request. `scripts/build_native.py` (run by
`scripts/setup.sh`) compiles the modules below with mypyc: the same source, type-checked as
it is, turned into C. The build lives outside the source tree, in `build/native`, with a stamp
of each source's size and modification time; if any source differs (edited since, another
checkout, another Python), nothing compiled loads and every module runs from its source, so a
stale build never runs. ``ARP_NATIVE=0`` runs the sources regardless.

It imports only `os`, `sys` and `importlib.machinery` (which Python has loaded at start-up
already): it runs as `arp` loads, in every process, before a plain relay's idle RSS counts.
"""

from __future__ import annotations

import os
import sys
from importlib.machinery import EXTENSION_SUFFIXES, ExtensionFileLoader, ModuleSpec

MODULES = (
    "arp.net.selector",
    "arp.net.readiness",
    "arp.net.pump",
    "arp.net.links",
    "arp.net.bridge",
    "arp.net.sockets",
    "arp.protocol.tunnel",
    "arp.protocol.requests",
    "arp.protocol.responses",
    "arp.protocol.http",
    "arp.protocol.forwarded",
    "arp.relay.conversation",
    "arp.relay.door",
    "arp.relay.public",
    "arp.relay.answers",
    "arp.relay.limits",
    "arp.relay.registry",
    "arp.relay.stats",
    "arp.client.tunnel",
)
"""The compiled set: the modules that run once per connection or per request."""

EXTENSIONS = {
    "arp.net._sockio": "arp/net/_sockio.c",
    "arp.protocol._wire": "arp/protocol/_wire.c",
}
"""C modules built beside the compiled ones (module → source under `SOURCE_ROOT`); they load
only with them."""
HEADERS = ("arp/_native_args.h",)
"""What those C modules include of ours (in the stamp, as their sources are)."""

GROUP = "arp_native"
"""mypyc's name for the group of compiled modules."""
LIBRARY = GROUP + "__mypyc"
"""The module (a shared library) that holds the group's code; each compiled module's own
extension is a small shim that imports it."""

STAMP_VERSION = "arp-native 2"

SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
"""The folder that holds the `arp` package (``src`` in a checkout)."""

BUILD_DIR = os.path.join(os.path.dirname(SOURCE_ROOT), "build", "native")
STAMP = os.path.join(BUILD_DIR, "STAMP")


def source_path(module: str) -> str:
    return os.path.join(SOURCE_ROOT, *module.split(".")) + ".py"


def stamp_lines() -> list[str]:
    """What the stamp must say for the sources as they are now."""
    lines = [f"{STAMP_VERSION} {sys.implementation.cache_tag} {GROUP}"]
    for module in MODULES:
        info = os.stat(source_path(module))
        lines.append(f"{module} {info.st_size} {info.st_mtime_ns}")
    for name, source in (*EXTENSIONS.items(), *((header, header) for header in HEADERS)):
        info = os.stat(os.path.join(SOURCE_ROOT, source))
        lines.append(f"{name} {info.st_size} {info.st_mtime_ns}")
    return lines


def current() -> dict[str, str] | None:
    """Module name → extension file, when the build matches the sources; else None."""
    try:
        with open(STAMP, encoding="utf-8") as file:
            recorded = file.read().splitlines()
        if recorded != stamp_lines():
            return None
    except OSError:
        return None
    # The suffix setuptools gives this Python's extensions (EXT_SUFFIX).
    files = {
        m: os.path.join(BUILD_DIR, *m.split(".")) + EXTENSION_SUFFIXES[0]
        for m in (LIBRARY, *MODULES, *EXTENSIONS)
    }
    if not all(os.path.exists(path) for path in files.values()):
        return None  # a build removed in part
    return files


class _Finder:
    """Finds the compiled modules (and their shared library) in the build."""

    def __init__(self, files: dict[str, str]) -> None:
        self._files = files

    def find_spec(self, name: str, path: object = None, target: object = None) -> ModuleSpec | None:
        file = self._files.get(name)
        if file is None:
            return None
        spec = ModuleSpec(name, ExtensionFileLoader(name, file), origin=file)
        spec.has_location = True
        return spec


def active() -> bool:
    """Whether the compiled data path is what this process runs."""
    return any(isinstance(finder, _Finder) for finder in sys.meta_path)


def install() -> bool:
    """Put the build in front of the sources if it matches them; says whether it did."""
    if os.environ.get("ARP_NATIVE", "1") == "0" or active():
        return active()
    files = current()
    if files is None or any(module in sys.modules for module in MODULES):
        return False
    sys.meta_path.insert(0, _Finder(files))
    return True
