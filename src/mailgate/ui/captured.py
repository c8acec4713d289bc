"""Captured mail: what the ``maildir`` providers wrote, newest first, with the same
preview as stored messages: a Mailpit-like inbox for development."""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass
from email import message_from_bytes, policy
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

from mailgate.ui.mail import view
from mailgate.ui.preview import download_part, download_source, html_preview
from mailgate.ui.web import Page, UiContext, UiError, render

LIMIT = 200  # newest files listed; older ones stay in the Maildir
HEAD_BYTES = 16 * 1024  # enough to read the listing's headers
_NAME = re.compile(r"[A-Za-z0-9._,:=+-]{1,255}")


@dataclass
class Captured:
    box: str
    name: str
    mtime: float
    size: int
    subject: str = ""
    sender: str = ""
    to: str = ""


def maildirs(ui: UiContext) -> dict[str, Path]:
    return {
        p.name: Path(p.path) for p in ui.api.settings.providers if p.kind == "maildir" and p.path
    }


def _scan(boxes: dict[str, Path]) -> tuple[list[Captured], int]:
    found: list[Captured] = []
    for box, root in boxes.items():
        for sub in ("new", "cur"):
            try:
                entries = list(os.scandir(root / sub))
            except OSError:
                continue
            for entry in entries:
                try:
                    st = entry.stat()
                except OSError:
                    continue
                if entry.is_file():
                    found.append(Captured(box, f"{sub}/{entry.name}", st.st_mtime, st.st_size))
    total = len(found)
    found.sort(key=lambda c: (c.mtime, c.name), reverse=True)
    found = found[:LIMIT]
    for c in found:
        try:
            with open(boxes[c.box] / c.name, "rb") as f:
                head = f.read(HEAD_BYTES).split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
        except OSError:
            continue
        msg = message_from_bytes(head + b"\r\n\r\n", policy=policy.compat32)
        c.subject = _decoded(msg.get("Subject", ""))
        c.sender = _decoded(msg.get("From", ""))
        c.to = _decoded(msg.get("Delivered-To", "") or msg.get("To", ""))
    return found, total


def _decoded(value: object) -> str:
    from email.header import decode_header, make_header

    try:
        return str(make_header(decode_header(str(value))))
    except (ValueError, LookupError, UnicodeDecodeError):
        return str(value)


def _path(ui: UiContext, box: str, sub: str, name: str) -> Path:
    boxes = maildirs(ui)
    if (
        box not in boxes
        or sub not in ("new", "cur")
        or not _NAME.fullmatch(name)
        or name in (".", "..")
    ):
        raise UiError(404, "No such captured message.")
    return boxes[box] / sub / name


async def _read(ui: UiContext, request: Request) -> tuple[bytes, str]:
    p = request.path_params
    path = _path(ui, p["box"], p["sub"], p["name"])
    try:
        raw = await asyncio.to_thread(path.read_bytes)
    except OSError:
        raise UiError(404, "That captured message is gone (moved or deleted).") from None
    return raw, p["name"]


async def captured_list(ui: UiContext, request: Request, page: Page) -> Response:
    boxes = maildirs(ui)
    items, total = await asyncio.to_thread(_scan, boxes)
    return render(
        ui,
        request,
        "captured.html",
        title="Captured mail",
        items=items,
        total=total,
        boxes=boxes,
        limit=LIMIT,
    )


async def captured_detail(ui: UiContext, request: Request, page: Page) -> Response:
    raw, name = await _read(ui, request)
    p = request.path_params
    base = f"/ui/captured/{p['box']}/{p['sub']}/{name}"
    return render(
        ui,
        request,
        "captured_one.html",
        title="Captured mail",
        mail=view(raw),
        base=base,
        box=p["box"],
        name=name,
        images=request.query_params.get("images") == "1",
    )


async def captured_html(ui: UiContext, request: Request, page: Page) -> Response:
    raw, _ = await _read(ui, request)
    return html_preview(request, raw)


async def captured_part(ui: UiContext, request: Request, page: Page) -> Response:
    raw, _ = await _read(ui, request)
    return download_part(raw, int(request.path_params["index"]))


async def captured_source(ui: UiContext, request: Request, page: Page) -> Response:
    raw, name = await _read(ui, request)
    return download_source(raw, name)
