"""Images and text files sent with a prompt: checked, stored with the session, named for the agent.

Every face hands the session manager `Upload`s (the HTTP API from JSON base64 or multipart, MCP
from base64, the remote protocol from its Image and File inputs); this module is the one place
that checks them and decides where they live and how each agent is told about them:

- Accepted: images ``image/png``, ``image/jpeg``, ``image/gif``, ``image/webp`` (their bytes must
  be what the type says), and text files (any type; the bytes must be UTF-8 without NUL). Bounds
  are `arp.config.AttachmentBounds`: at most ``max_count`` per prompt and ``max_bytes`` decoded
  bytes together, 413 beyond; anything else is a 400 naming the attachment.
- Stored in the session's folder, ``attachments/<run>-<n>-<name>`` (folder 0700, files 0600),
  deleted with the session. A name keeps only letters, digits and ``. _ -`` (so it is one
  harmless argument and one word for every CLI).
- Each agent gets them natively (`arp.agents.argv` writes the flags): Claude Code image content
  blocks in a stream-json user message, its folder passed with ``--add-dir`` so its tools may
  read the files; Codex ``-i/--image`` (``localImage`` inputs in ask mode); Gemini ``@path``
  includes with the folder in ``--include-directories`` (image blocks in ask mode). Whatever the
  agent, the prompt it receives ends with one note per attachment naming its path.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from arp import errors
from arp.agents.errors import BadRequest, SessionError
from arp.config import ATTACHMENT_BOUNDS, AttachmentBounds

IMAGE_TYPES: Final[dict[str, str]] = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/gif": ".gif",
    "image/webp": ".webp",
}
"""The image types every agent accepts → the extension a stored image gets."""

FOLDER: Final = "attachments"
"""The sub-folder of a session's folder that holds them."""

_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]+")


class AttachmentsTooLarge(SessionError, errors.PayloadTooLarge):
    """More attachments, or more bytes of them, than `AttachmentBounds` allows."""

    status = 413


@dataclass(frozen=True, slots=True)
class Upload:
    """An attachment as a face received it (not yet checked)."""

    name: str
    content_type: str
    data: bytes

    @classmethod
    def from_json(cls, item: Any, index: int) -> Upload:
        """``{"name", "content_type", "data"}`` (``data`` base64; ``contentType`` and
        ``mime_type`` are accepted too); a bad item is a 400 naming its position."""
        where = f"attachments[{index}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{where} must be an object with 'name', 'content_type' and 'data'")
        name = item.get("name", item.get("filename"))
        ctype = item.get("content_type", item.get("contentType", item.get("mime_type")))
        data = item.get("data")
        if name is not None and not isinstance(name, str):
            raise BadRequest(f"{where}.name must be a string")
        if ctype is not None and not isinstance(ctype, str):
            raise BadRequest(f"{where}.content_type must be a string")
        if not isinstance(data, str):
            raise BadRequest(f"{where}.data is required: the file's bytes in base64")
        try:
            raw = base64.b64decode(data.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(f"{where}.data is not valid base64") from None
        return cls(name or f"attachment-{index + 1}", ctype or "", raw)


def uploads_from_json(value: Any, bounds: AttachmentBounds = ATTACHMENT_BOUNDS) -> list[Upload]:
    """The ``attachments`` member of a JSON body (None: none); bounds checked before decoding."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest("'attachments' must be a list of {name, content_type, data}")
    if len(value) > bounds.max_count:
        raise AttachmentsTooLarge(
            f"{len(value)} attachments; at most {bounds.max_count} may come with one prompt"
        )
    encoded = sum(
        len(item["data"])
        for item in value
        if isinstance(item, dict) and isinstance(item.get("data"), str)
    )
    if encoded * 3 // 4 > bounds.max_bytes + 3:
        raise AttachmentsTooLarge(_too_many_bytes(encoded * 3 // 4, bounds))
    return [Upload.from_json(item, index) for index, item in enumerate(value)]


def _too_many_bytes(size: int, bounds: AttachmentBounds) -> str:
    return f"attachments hold {size} bytes; at most {bounds.max_bytes} may come with one prompt"


@dataclass(frozen=True, slots=True)
class StoredAttachment:
    """An attachment kept with its session (the session JSON and the prompt event list it)."""

    id: str
    run: int
    name: str
    content_type: str
    size: int
    kind: Literal["image", "file"]
    path: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "run": self.run,
            "name": self.name,
            "content_type": self.content_type,
            "size": self.size,
            "kind": self.kind,
            "path": self.path,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoredAttachment:
        return cls(
            id=str(data["id"]),
            run=int(data["run"]),
            name=str(data["name"]),
            content_type=str(data["content_type"]),
            size=int(data["size"]),
            kind="image" if data.get("kind") == "image" else "file",
            path=str(data["path"]),
        )

    @property
    def is_image(self) -> bool:
        return self.kind == "image"


def _sniff_image(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def safe_name(name: str, bounds: AttachmentBounds = ATTACHMENT_BOUNDS) -> str:
    """A file name of letters, digits and ``. _ -`` only, not hidden, at most ``max_name_chars``."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _UNSAFE.sub("_", base).strip("._") or "attachment"
    if len(cleaned) > bounds.max_name_chars:
        stem, dot, ext = cleaned.rpartition(".")
        ext = ext[:16] if dot else ""
        keep = bounds.max_name_chars - len(ext) - (1 if ext else 0)
        cleaned = (stem if dot else cleaned)[:keep] + ("." + ext if ext else "")
    return cleaned


def check_uploads(
    uploads: Sequence[Upload], bounds: AttachmentBounds = ATTACHMENT_BOUNDS
) -> list[tuple[Upload, Literal["image", "file"], str]]:
    """Each upload with its kind and checked content type; 413 beyond the bounds, 400 for an
    attachment that is neither an accepted image nor UTF-8 text."""
    if len(uploads) > bounds.max_count:
        raise AttachmentsTooLarge(
            f"{len(uploads)} attachments; at most {bounds.max_count} may come with one prompt"
        )
    total = sum(len(upload.data) for upload in uploads)
    if total > bounds.max_bytes:
        raise AttachmentsTooLarge(_too_many_bytes(total, bounds))
    checked: list[tuple[Upload, Literal["image", "file"], str]] = []
    for index, upload in enumerate(uploads):
        where = f"attachment {index + 1} ({upload.name[:80]!r})"
        declared = upload.content_type.split(";", 1)[0].strip().lower()
        sniffed = _sniff_image(upload.data)
        if declared.startswith("image/") or (not declared and sniffed):
            if declared and declared not in IMAGE_TYPES:
                raise BadRequest(
                    f"{where}: images must be one of {', '.join(IMAGE_TYPES)}, not {declared}"
                )
            if sniffed is None or (declared and sniffed != declared):
                raise BadRequest(f"{where}: its bytes are not a {declared or 'known'} image")
            checked.append((upload, "image", sniffed))
            continue
        if not upload.data:
            raise BadRequest(f"{where} is empty")
        try:
            text = upload.data.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(
                f"{where}: only images ({', '.join(IMAGE_TYPES)}) and UTF-8 text files "
                "may be attached"
            ) from None
        if "\x00" in text:
            raise BadRequest(f"{where}: a text file must not contain NUL characters")
        ctype = declared if declared and declared != "application/octet-stream" else "text/plain"
        checked.append((upload, "file", ctype))
    return checked


def plan(
    uploads: Sequence[Upload],
    folder: Path,
    run: int,
    bounds: AttachmentBounds = ATTACHMENT_BOUNDS,
) -> list[tuple[StoredAttachment, bytes]]:
    """The checked uploads of run ``run`` with the paths they will be stored at (nothing is
    written yet: `write` does that off the event loop)."""
    planned: list[tuple[StoredAttachment, bytes]] = []
    used: set[str] = set()
    for number, (upload, kind, ctype) in enumerate(check_uploads(uploads, bounds), 1):
        name = safe_name(upload.name, bounds)
        if kind == "image" and not name.lower().endswith(IMAGE_TYPES[ctype]):
            name = name + IMAGE_TYPES[ctype]
        file_name = f"{run}-{number}-{name}"
        while file_name in used:  # pragma: no cover - the run and number make names unique
            file_name = "_" + file_name
        used.add(file_name)
        stored = StoredAttachment(
            id=f"{run}-{number}",
            run=run,
            name=name,
            content_type=ctype,
            size=len(upload.data),
            kind=kind,
            path=str(folder / FOLDER / file_name),
        )
        planned.append((stored, upload.data))
    return planned


def write(planned: Iterable[tuple[StoredAttachment, bytes]]) -> None:
    """Writes each attachment, private (folder 0700, file 0600, never over an existing file)."""
    for stored, data in planned:
        path = Path(stored.path)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)


def note(attachments: Sequence[StoredAttachment]) -> str:
    """What the prompt the agent receives ends with: one line naming each attachment's path."""
    lines = []
    for item in attachments:
        what = "Image" if item.is_image else "File"
        lines.append(
            f"[{what} attached: {item.path} ({item.content_type}, {item.size} bytes); "
            "read it from that path]"
        )
    return "\n".join(lines)


def with_note(prompt: str, attachments: Sequence[StoredAttachment]) -> str:
    return f"{prompt}\n\n{note(attachments)}" if attachments else prompt


def read_base64(item: StoredAttachment) -> str:
    """The stored bytes in base64 (an image content block's ``data``)."""
    return base64.b64encode(Path(item.path).read_bytes()).decode("ascii")


def folder_of(attachments: Sequence[StoredAttachment]) -> str | None:
    """The one folder the attachments live in (what ``--add-dir`` names), None when none."""
    return str(Path(attachments[0].path).parent) if attachments else None
