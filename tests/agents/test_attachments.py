"""Attachments without a CLI: checks, names, bounds, and how each argv and stdio protocol carries
them (`arp.agents.attachments`, `arp.agents.argv`, `arp.agents.ask`, `arp.agents.ask_rpc`)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from arp.agents.argv import RunSpec, build_claude, build_codex, build_gemini
from arp.agents.ask import ClaudeAsk
from arp.agents.ask_rpc import CodexAppServer, GeminiAcp
from arp.agents.attachments import (
    AttachmentsTooLarge,
    Upload,
    check_uploads,
    plan,
    safe_name,
    uploads_from_json,
    write,
)
from arp.agents.errors import BadRequest
from arp.agents.executors import get_executor
from arp.config import AttachmentBounds

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16
GIF = b"GIF89a" + b"\0" * 8
JPEG = b"\xff\xd8\xff\xe0" + b"\0" * 8
WEBP = b"RIFF\0\0\0\0WEBPVP8 "


def test_names_are_one_harmless_word() -> None:
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("my screen shot (1).png") == "my_screen_shot_1_.png"
    assert safe_name(".hidden") == "hidden"
    assert not safe_name("-rf").startswith(".")
    long = safe_name("a" * 300 + ".png", AttachmentBounds(max_name_chars=20))
    assert len(long) == 20 and long.endswith(".png")
    assert safe_name("") == "attachment"


def test_images_must_be_what_they_say_and_files_utf8_text() -> None:
    kinds = check_uploads(
        [
            Upload("a.png", "image/png", PNG),
            Upload("b.gif", "image/gif", GIF),
            Upload("c.jpg", "image/jpeg", JPEG),
            Upload("d.webp", "image/webp", WEBP),
            Upload("e.txt", "", "héllo\n".encode()),
            Upload("f", "", PNG),  # no type: sniffed
        ]
    )
    assert [(kind, ctype) for _, kind, ctype in kinds] == [
        ("image", "image/png"),
        ("image", "image/gif"),
        ("image", "image/jpeg"),
        ("image", "image/webp"),
        ("file", "text/plain"),
        ("image", "image/png"),
    ]
    for bad in (
        Upload("x.png", "image/png", GIF),
        Upload("x.svg", "image/svg+xml", b"<svg/>"),
        Upload("x.bin", "application/octet-stream", b"\xff\xfe"),
        Upload("x.txt", "text/plain", b"a\0b"),
        Upload("x.txt", "text/plain", b""),
    ):
        with pytest.raises(BadRequest):
            check_uploads([bad])


def test_bounds_are_413() -> None:
    bounds = AttachmentBounds(max_count=2, max_bytes=10)
    with pytest.raises(AttachmentsTooLarge) as caught:
        check_uploads([Upload("a", "", b"x")] * 3, bounds)
    assert caught.value.status == 413
    with pytest.raises(AttachmentsTooLarge):
        check_uploads([Upload("a", "", b"x" * 11)], bounds)
    with pytest.raises(AttachmentsTooLarge):
        uploads_from_json([{"data": base64.b64encode(b"x" * 30).decode()}], bounds)


def test_json_items_are_checked() -> None:
    assert uploads_from_json(None) == []
    (one,) = uploads_from_json([{"name": "n", "contentType": "text/plain", "data": "aGk="}])
    assert one == Upload("n", "text/plain", b"hi")
    for bad in ("x", [1], [{"data": 3}], [{"data": "!!"}], [{"name": 1, "data": ""}]):
        with pytest.raises(BadRequest):
            uploads_from_json(bad)


def test_stored_private_and_named_by_run(tmp_path: Path) -> None:
    planned = plan([Upload("a b.png", "image/png", PNG), Upload("n.txt", "", b"x")], tmp_path, 2)
    write(planned)
    (image, _), (text, _) = planned
    assert (image.id, image.name, image.kind) == ("2-1", "a_b.png", "image")
    assert Path(image.path) == tmp_path / "attachments" / "2-1-a_b.png"
    assert Path(image.path).stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "attachments").stat().st_mode & 0o777 == 0o700
    assert Path(text.path).read_bytes() == b"x"
    with pytest.raises(FileExistsError):  # never over an existing file
        write(planned)


def stored(tmp_path: Path) -> RunSpec:
    planned = plan([Upload("s.png", "image/png", PNG), Upload("n.txt", "", b"x")], tmp_path, 0)
    write(planned)
    return RunSpec(prompt="look", attachments=tuple(item for item, _ in planned))


def test_each_cli_gets_them_natively(tmp_path: Path) -> None:
    spec = stored(tmp_path)
    folder = str(tmp_path / "attachments")
    image, text = (item.path for item in spec.attachments)
    claude = build_claude("claude", spec)
    assert claude[:4] == ["claude", "-p", "--add-dir", folder]
    assert "--input-format" in claude and "look" not in claude  # the prompt goes over stdin
    assert get_executor("claude").stdio(spec) is not None
    assert get_executor("codex").stdio(spec) is None
    codex = build_codex("codex", spec)
    assert codex[codex.index("-i") : codex.index("-i") + 3] == [
        "-i",
        image,
        "--skip-git-repo-check",
    ]
    resumed = build_codex("codex", RunSpec("more", resume_id="t1", attachments=spec.attachments))
    assert resumed[-5:] == ["-i", image, "--skip-git-repo-check", "t1", "more"]
    assert resumed.count("--skip-git-repo-check") == 1
    gemini = build_gemini("gemini", spec)
    assert gemini[2] == f"look\n\n@{image} @{text}"
    assert gemini[3:5] == ["--include-directories", folder]
    assert build_gemini("gemini", RunSpec("x", ask=True, attachments=spec.attachments))[4:6] == [
        "--include-directories",
        folder,
    ]


def test_stdio_protocols_carry_the_images(tmp_path: Path) -> None:
    spec = stored(tmp_path)
    data = base64.b64encode(PNG).decode()
    _, user = ClaudeAsk(spec).opening("look")
    content = json.loads(user)["message"]["content"]
    assert content == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}},
        {"type": "text", "text": "look"},
    ]
    codex = CodexAppServer(spec)
    codex.opening("look")
    codex.rpc.sent[99] = "thread/start"
    step = codex.on_line(json.dumps({"id": 99, "result": {"thread": {"id": "t"}}}))
    turn = json.loads(step.writes[0])["params"]
    assert turn["input"][1] == {"type": "localImage", "path": spec.attachments[0].path}
    gemini = GeminiAcp(spec)
    gemini.opening("look")
    gemini.rpc.sent[98] = "session/new"
    step = gemini.on_line(json.dumps({"id": 98, "result": {"sessionId": "s"}}))
    prompt = json.loads(step.writes[0])["params"]["prompt"]
    assert prompt[1] == {"type": "image", "mimeType": "image/png", "data": data}
