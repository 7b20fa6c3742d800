"""Compile ARP's data path with mypyc into build/native (see src/arp/native.py).

Run by scripts/setup.sh; does nothing when the build matches the sources. Without a C
compiler or mypyc it says so and exits 0: ARP then runs from its sources, only slower.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import sys
import sysconfig
import tempfile
import time

# This checkout's sources, not whichever `arp` the interpreter has installed.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))
from arp import native


def build() -> None:
    from mypyc.build import mypycify
    from setuptools import Extension, setup

    sources = [os.path.relpath(native.source_path(m), native.SOURCE_ROOT) for m in native.MODULES]
    stamp = native.stamp_lines()  # taken before compiling: an edit meanwhile makes it stale
    staging = tempfile.mkdtemp(prefix="arp-native-")
    here = os.getcwd()
    try:
        # mypyc names modules by their paths from the working directory: src/ holds `arp`.
        os.chdir(native.SOURCE_ROOT)
        extensions = mypycify(
            sources, opt_level="3", group_name=native.GROUP, target_dir=os.path.join(staging, "c")
        )
        extensions += [
            Extension(module, [source], extra_compile_args=["-O2", "-Wall", "-Werror"])
            for module, source in native.EXTENSIONS.items()
        ]
        setup(
            name="arp-native",
            ext_modules=extensions,
            script_args=[
                "--quiet", "build_ext", "--build-lib", os.path.join(staging, "lib"),
                "--build-temp", os.path.join(staging, "tmp"),
                "--parallel", str(os.cpu_count() or 1),
            ],
        )  # fmt: skip
    finally:
        os.chdir(here)
    shutil.rmtree(native.BUILD_DIR, ignore_errors=True)
    shutil.move(os.path.join(staging, "lib"), native.BUILD_DIR)
    shutil.rmtree(staging, ignore_errors=True)
    with open(native.STAMP, "w", encoding="utf-8") as file:
        file.write("\n".join(stamp) + "\n")


def main() -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    if native.current() is not None:
        print("native: the compiled data path is up to date")
        return 0
    try:
        import mypyc.build  # noqa: F401
    except ImportError:
        print("native: mypyc is not installed; ARP runs from its sources", file=sys.stderr)
        return 0
    if shutil.which(os.environ.get("CC", "cc")) is None:
        print("native: no C compiler (cc); ARP runs from its sources", file=sys.stderr)
        return 0
    headers = os.path.join(sysconfig.get_paths()["include"], "Python.h")
    if not os.path.exists(headers):
        print(f"native: no {headers} (python3-dev); ARP runs from its sources", file=sys.stderr)
        return 0
    os.makedirs(os.path.dirname(native.BUILD_DIR), exist_ok=True)
    with open(native.BUILD_DIR + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another set-up builds at the same time: wait for it
        if native.current() is not None:
            print("native: the compiled data path is up to date")
            return 0
        print(
            f"native: compiling {len(native.MODULES)} modules with mypyc and"
            f" {len(native.EXTENSIONS)} in C (about a minute)"
        )
        sys.stdout.flush()
        started = time.monotonic()
        build()
    if native.current() is None:
        print("native: the build does not match the sources after compiling", file=sys.stderr)
        return 1
    print(f"native: built in {time.monotonic() - started:.0f} s into {native.BUILD_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
