"""Project-path policy: which folder a run works in, by one set of rules for every face.

A session names a project folder (or none). The rules, checked before anything starts:

- None or blank: the default project, else ``--allowed-root``, else arpc's working directory.
- A relative path lies under ``--allowed-root`` (else the default project, else arpc's cwd),
  never under wherever arpc happened to be started.
- Containment before existence: a path outside the allowed root is a 403 (`Forbidden`) whether
  or not it exists, so a caller learns nothing of what lies outside; then a missing path or one
  that is not a folder is a 400 (`BadRequest`).

The remote protocol uses the same function to place attachments saved into the project.
"""

from __future__ import annotations

import os
from pathlib import Path

from arp.agents.argv import check_text
from arp.agents.errors import BadRequest, Forbidden


def resolve_project(
    requested: str | None, *, allowed_root: Path | None, default_project: Path | None
) -> Path:
    """The folder a run in project ``requested`` uses; `BadRequest` or `Forbidden` otherwise."""
    root = allowed_root.resolve() if allowed_root else None
    if requested is None or not requested.strip():
        base = default_project or root or Path.cwd()
        return base.resolve()
    check_text("projectPath", requested)
    path = Path(requested).expanduser()
    if not path.is_absolute():
        # Relative to the root (or the default project), never to wherever arpc was started.
        path = (root or default_project or Path.cwd()) / path
    resolved = path.resolve()
    # Containment first: a path outside the root is a 403 whether or not it exists, so a
    # caller learns nothing about what lies outside.
    if root is not None and not resolved.is_relative_to(root):
        raise Forbidden(f"project path {requested} is outside the allowed root {root}")
    if not resolved.exists():
        raise BadRequest(f"project path {requested} does not exist")
    if not resolved.is_dir():
        raise BadRequest(f"project path {requested} is not a directory")
    return resolved


def check_still_a_folder(path: str) -> None:
    """A follow-up runs where the session ran; that folder may have gone since (400)."""
    if not os.path.isdir(path):
        raise BadRequest(f"project path {path} no longer exists")
