"""What a session changed in its project: a base taken when its first run starts, a diff on request.

``GET /api/sessions/{id}/changes`` (and MCP's ``get_changes``) answer
``{"base": {...}, "files": [{"path", "status", "additions", "deletions", "diff"}], ...}``.

- In a git work tree the base is the commit checked out (``HEAD``, None on an unborn branch)
  and a tree object of the whole work tree as it was, dirty state and untracked files included,
  so what the person had not committed is never reported as the agent's. That tree is written
  with a private index: the user's index file is *copied* to a temporary file, and
  ``GIT_INDEX_FILE=<copy> git add -A`` + ``git write-tree`` put the blobs and trees into the
  object database (unreferenced objects that ``git gc`` prunes in time). The user's index, stash,
  branches and refs are never written. "Now" is a tree taken the same way, and the answer is
  ``git diff-tree -M`` between the two: renames are found, ignored files are not listed.
- Outside git the base is a snapshot kept in the session's folder (``changes/``): the project's
  files (bounded by `arp.config.ChangesBounds`: count, size per file, bytes in all) with their
  hash, and the content of the small ones. The answer compares it with the project now, and also
  looks at every file the agent's tool calls named (``file_path``/``path`` inputs), even beyond
  the snapshot's bounds: a file the snapshot did not hold is reported as added only when the
  snapshot was complete or a tool call named it.
- A binary file is listed without a diff (``binary: true``); a diff longer than
  ``max_diff_bytes`` is cut with a marker line saying how many bytes were cut; ``?path=`` asks for
  one file's diff up to ``max_file_diff_bytes``.

Every git command has the ``git_timeout`` deadline and at most ``max_output`` bytes of output.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

from arp.agents.errors import SessionNotFound
from arp.config import CHANGES_BOUNDS, ChangesBounds

FOLDER: Final = "changes"
"""The sub-folder of a session's folder holding an outside-git snapshot."""

CUT: Final = "\n[diff cut by arp: {cut} more bytes; ask for this file with ?path= for all of it]\n"
_SKIP_DIRS: Final = frozenset({".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv"})
_STATUS: Final = {"A": "added", "M": "modified", "D": "deleted", "R": "renamed", "T": "modified"}
NO_NEWLINE: Final = "\n\\ No newline at end of file\n"
_GIT_ENV: Final = {"GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}


class GitFailed(Exception):
    """A git command failed or outlived its deadline."""


async def _git(
    args: list[str],
    cwd: str,
    bounds: ChangesBounds,
    env: dict[str, str] | None = None,
) -> bytes:
    """Runs ``git args`` in ``cwd`` and returns its stdout (cut at ``max_output``)."""
    full_env = {**os.environ, **_GIT_ENV, **(env or {})}
    process = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=cwd,
        env=full_env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(bounds.git_timeout):
            assert process.stdout is not None and process.stderr is not None
            out = await process.stdout.read(bounds.max_output)
            # Whatever is left past the bound is drained and dropped.
            while await process.stdout.read(1 << 16):
                pass
            err = await process.stderr.read(64 * 1024)
            code = await process.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise GitFailed(f"git {args[0]} took longer than {bounds.git_timeout:g}s") from None
    if code != 0:
        raise GitFailed(f"git {args[0]}: {err.decode(errors='replace').strip()[:500]}")
    return out


async def _git_root(project: str, bounds: ChangesBounds) -> str | None:
    try:
        out = await _git(["rev-parse", "--show-toplevel"], project, bounds)
    except (GitFailed, OSError):
        return None
    root = out.decode(errors="surrogateescape").strip()
    return root or None


async def work_tree(root: str, bounds: ChangesBounds) -> str:
    """A tree object of the work tree as it is now, written through a private copy of the
    index (the user's index file is read, never written)."""
    index_path = (await _git(["rev-parse", "--git-path", "index"], root, bounds)).decode().strip()
    index = Path(root, index_path)
    scratch = await asyncio.to_thread(tempfile.mkdtemp, prefix="arp-index-")
    try:
        private = Path(scratch, "index")
        if await asyncio.to_thread(index.is_file):
            await asyncio.to_thread(shutil.copyfile, index, private)
        env = {"GIT_INDEX_FILE": str(private)}
        await _git(["add", "-A", "--", "."], root, bounds, env)
        return (await _git(["write-tree"], root, bounds, env)).decode().strip()
    finally:
        await asyncio.to_thread(shutil.rmtree, scratch, True)


async def take_base(
    project: str, folder: Path | None, bounds: ChangesBounds = CHANGES_BOUNDS
) -> dict[str, Any]:
    """The base of a session's changes, taken as its first run starts (see the module doc).

    Never raises: a base that could not be taken says why (``error``)."""
    now = time.time()
    root = await _git_root(project, bounds)
    if root is not None:
        base: dict[str, Any] = {"kind": "git", "root": root, "taken_at": now}
        try:
            head = await _git(["rev-parse", "--verify", "-q", "HEAD^{commit}"], root, bounds)
            base["commit"] = head.decode().strip() or None
        except GitFailed:
            base["commit"] = None  # an unborn branch: no commit yet
        try:
            base["tree"] = await work_tree(root, bounds)
        except (GitFailed, OSError) as exc:
            base["error"] = f"the work tree could not be recorded: {exc}"
        return base
    if folder is None:
        return {"kind": "files", "root": project, "taken_at": now, "error": "no session folder"}
    try:
        return await asyncio.to_thread(_snapshot, project, folder / FOLDER, bounds, now)
    except OSError as exc:
        return {"kind": "files", "root": project, "taken_at": now, "error": str(exc)}


async def report(
    base: dict[str, Any] | None,
    folder: Path | None,
    tool_paths: Iterable[str],
    bounds: ChangesBounds = CHANGES_BOUNDS,
    path: str | None = None,
) -> dict[str, Any]:
    """The answer of ``GET /api/sessions/{id}/changes`` (``path``: that one file, full)."""
    if base is None:
        return {"base": None, "files": [], "note": "no run has started yet"}
    if base.get("error"):
        return {"base": base, "files": [], "note": base["error"]}
    if base.get("kind") == "git":
        files = await _git_changes(base, bounds, path)
    else:
        assert folder is not None
        files = await asyncio.to_thread(
            _file_changes, base, folder / FOLDER, list(tool_paths), bounds, path
        )
    if path is not None:
        files = [item for item in files if item["path"] == path or item.get("old_path") == path]
        if not files:
            raise NotChanged(f"{path!r} has not changed in this session")
    answer: dict[str, Any] = {"base": base, "files": files[: bounds.max_files]}
    if len(files) > bounds.max_files:
        answer["truncated"] = len(files) - bounds.max_files
    return answer


class NotChanged(SessionNotFound):
    """``?path=`` names a file the session did not change (404)."""

    status = 404


# ------------------------------------------------------------------------------------ git


async def _git_changes(
    base: dict[str, Any], bounds: ChangesBounds, path: str | None
) -> list[dict[str, Any]]:
    root = str(base["root"])
    now = await work_tree(root, bounds)
    old = str(base["tree"])
    common = ["diff-tree", "-r", "-M", "--no-color", "--no-ext-diff", "--no-textconv"]
    raw = await _git([*common, "-z", "--raw", "--numstat", old, now], root, bounds)
    files = _parse_raw_numstat(raw)
    if not files:
        return []
    limit = bounds.max_file_diff_bytes if path is not None else bounds.max_diff_bytes
    patch = await _git([*common, "-p", old, now], root, bounds)
    chunks = _split_patch(patch)
    for item, chunk in zip(files, chunks, strict=False):
        if item["binary"]:
            item["diff"] = None
        else:
            item["diff"] = _cut(chunk, limit)
    return files


def _parse_raw_numstat(out: bytes) -> list[dict[str, Any]]:
    """``--raw --numstat -z`` output → one entry per file, in git's order."""
    fields = out.decode("utf-8", errors="replace").split("\0")
    files: list[dict[str, Any]] = []
    i = 0
    # The raw part: ":mode mode sha sha STATUS\0path\0[path2\0]"
    while i < len(fields) and fields[i].startswith(":"):
        status_letter = fields[i].split()[-1][:1]
        item: dict[str, Any] = {"status": _STATUS.get(status_letter, "modified")}
        if status_letter in ("R", "C"):
            item["old_path"], item["path"] = fields[i + 1], fields[i + 2]
            i += 3
        else:
            item["path"] = fields[i + 1]
            i += 2
        files.append(item)
    # The numstat part: "add\tdel\tpath\0" or, for a rename, "add\tdel\t\0old\0new\0".
    n = 0
    while i < len(fields) and n < len(files):
        head = fields[i]
        if not head:
            i += 1
            continue
        adds, dels, rest = [*head.split("\t", 2), "", ""][:3]
        i += 1 if rest else 3
        item = files[n]
        n += 1
        item["binary"] = adds == "-"
        item["additions"] = int(adds) if adds.isdigit() else 0
        item["deletions"] = int(dels) if dels.isdigit() else 0
    for item in files:
        item.setdefault("binary", False)
        item.setdefault("additions", 0)
        item.setdefault("deletions", 0)
    return [_ordered(item) for item in files]


def _ordered(item: dict[str, Any]) -> dict[str, Any]:
    out = {
        "path": item["path"],
        "status": item["status"],
        "additions": item["additions"],
        "deletions": item["deletions"],
        "binary": item["binary"],
        "diff": item.get("diff"),
    }
    if "old_path" in item:
        out["old_path"] = item["old_path"]
    return out


def _split_patch(patch: bytes) -> list[bytes]:
    chunks: list[bytes] = []
    for part in patch.split(b"\ndiff --git ")[0:]:
        if not part:
            continue
        chunks.append(part if part.startswith(b"diff --git ") else b"diff --git " + part)
    return chunks


def _cut(chunk: bytes, limit: int) -> str:
    text = chunk if chunk.endswith(b"\n") else chunk + b"\n"
    if len(text) <= limit:
        return text.decode("utf-8", errors="replace")
    head = text[:limit]
    cut = len(text) - len(head)
    return head.decode("utf-8", errors="ignore") + CUT.format(cut=cut)


# ------------------------------------------------------------------------------ outside git


def _walk(root: Path, limit: int) -> tuple[list[str], bool]:
    """Relative paths of the regular files under ``root`` (not following links, skipping
    VCS and dependency folders), at most ``limit``; and whether that was all of them."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in sorted(filenames):
            full = Path(dirpath, name)
            if full.is_symlink() or not full.is_file():
                continue
            if len(found) >= limit:
                return found, False
            found.append(str(full.relative_to(root)))
    return found, True


def _hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def _snapshot(project: str, store: Path, bounds: ChangesBounds, now: float) -> dict[str, Any]:
    root = Path(project)
    store.mkdir(mode=0o700, parents=True, exist_ok=True)
    blobs = store / "blobs"
    blobs.mkdir(mode=0o700, exist_ok=True)
    paths, complete = _walk(root, bounds.snapshot_files)
    manifest: dict[str, dict[str, Any]] = {}
    kept = 0
    for rel in paths:
        full = root / rel
        try:
            size = full.stat().st_size
            digest = _hash(full)
        except OSError:
            continue
        entry: dict[str, Any] = {"size": size, "sha256": digest, "kept": False}
        if size <= bounds.snapshot_file_bytes and kept + size <= bounds.snapshot_bytes:
            blob = blobs / digest
            if not blob.exists():
                fd = os.open(blob, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as f, full.open("rb") as src:
                    shutil.copyfileobj(src, f)
            entry["kept"] = True
            kept += size
        manifest[rel] = entry
    fd = os.open(store / "manifest.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(manifest, f)
    return {
        "kind": "files",
        "root": project,
        "taken_at": now,
        "files": len(manifest),
        "complete": complete,
    }


def _relative(root: Path, name: str) -> str | None:
    """A tool call's path as a path relative to the project (None: outside it)."""
    candidate = Path(name) if os.path.isabs(name) else root / name
    try:
        return str(Path(os.path.normpath(candidate)).relative_to(root))
    except ValueError:
        return None


def _file_changes(
    base: dict[str, Any],
    store: Path,
    tool_paths: list[str],
    bounds: ChangesBounds,
    path: str | None,
) -> list[dict[str, Any]]:
    root = Path(str(base["root"]))
    try:
        manifest: dict[str, dict[str, Any]] = json.loads(
            (store / "manifest.json").read_text(encoding="utf-8")
        )
    except (OSError, ValueError):
        manifest = {}
    now_paths, _ = _walk(root, bounds.snapshot_files)
    named = {rel for rel in (_relative(root, p) for p in tool_paths) if rel}
    candidates = set(manifest) | named
    if base.get("complete"):
        candidates |= set(now_paths)
    limit = bounds.max_file_diff_bytes if path is not None else bounds.max_diff_bytes
    files: list[dict[str, Any]] = []
    for rel in sorted(candidates):
        if path is not None and rel != path:
            continue
        before = manifest.get(rel)
        full = root / rel
        exists = full.is_file() and not full.is_symlink()
        if before is None and not exists:
            continue
        if before is not None and exists:
            try:
                if full.stat().st_size == before["size"] and _hash(full) == before["sha256"]:
                    continue
            except OSError:
                continue
        status = "added" if before is None else ("deleted" if not exists else "modified")
        old = _blob(store, before) if before is not None else b""
        new = _read(full, bounds) if exists else b""
        files.append(_file_entry(rel, status, old, new, limit))
    return files


def _blob(store: Path, entry: dict[str, Any]) -> bytes | None:
    if not entry.get("kept"):
        return None
    try:
        return (store / "blobs" / str(entry["sha256"])).read_bytes()
    except OSError:
        return None


def _read(path: Path, bounds: ChangesBounds) -> bytes | None:
    try:
        if path.stat().st_size > bounds.snapshot_file_bytes:
            return None
        return path.read_bytes()
    except OSError:
        return None


def _text(data: bytes | None) -> list[str] | None:
    if data is None or b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8").splitlines(keepends=True)
    except UnicodeDecodeError:
        return None


def _file_entry(
    rel: str, status: str, old: bytes | None, new: bytes | None, limit: int
) -> dict[str, Any]:
    old_lines, new_lines = _text(old), _text(new)
    item: dict[str, Any] = {
        "path": rel,
        "status": status,
        "additions": 0,
        "deletions": 0,
        "binary": old_lines is None or new_lines is None,
        "diff": None,
    }
    if old_lines is None or new_lines is None:
        return item
    a = "/dev/null" if status == "added" else f"a/{rel}"
    b = "/dev/null" if status == "deleted" else f"b/{rel}"
    lines = list(difflib.unified_diff(old_lines, new_lines, a, b))
    for line in lines[2:]:
        if line.startswith("+"):
            item["additions"] += 1
        elif line.startswith("-"):
            item["deletions"] += 1
    body = "".join(line if line.endswith("\n") else line + NO_NEWLINE for line in lines)
    item["diff"] = _cut(f"diff --git a/{rel} b/{rel}\n{body}".encode(), limit)
    return item


def tool_paths(events: Iterable[Any]) -> list[str]:
    """The file paths the agent's tool calls named (``file_path``, ``path``, ``filePath``)."""
    found: list[str] = []
    for event in events:
        if getattr(event, "kind", None) != "tool_call":
            continue
        data = getattr(event, "tool_input", None)
        if not isinstance(data, dict):
            continue
        for key in ("file_path", "path", "filePath", "notebook_path"):
            value = data.get(key)
            if isinstance(value, str) and value and value not in found:
                found.append(value)
    return found
