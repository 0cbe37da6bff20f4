"""JPEG provenance: the capture session stamped into the image itself.

`datatool capture` writes `facekit:{"session": ..., "source": ..., "time": ..., "person": ...}`
as a JPEG comment (COM segment). It lives in the image, so it survives renames and moves, and
needs no JSON (an image with no JSON is *unlabeled*; an empty JSON would claim "no face").
`capture_info(path)` / `session_of(path)` read it back without decoding pixels; `augment` and
`crop` carry it into what they derive, `prelabel` copies it into the labelme JSON.
"""

from __future__ import annotations

import json
import secrets
import struct
from datetime import datetime
from pathlib import Path

COMMENT_PREFIX = b"facekit:"


def new_session_id(now: datetime | None = None) -> str:
    """`YYYYmmdd-HHMMSS-xxxx`: sortable by time, unique across runs started in the same second."""
    now = now or datetime.now()
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def stamp_jpeg(data: bytes, info: dict) -> bytes:
    """JPEG bytes with a `facekit:{json}` comment segment inserted after SOI (and JFIF APP0)."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("stamp_jpeg expects JPEG bytes (no SOI marker)")
    payload = COMMENT_PREFIX + json.dumps(info, sort_keys=True, ensure_ascii=True).encode("ascii")
    if len(payload) > 65533:
        raise ValueError("capture info too long for one JPEG comment")
    segment = b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload
    pos = 2
    # JFIF wants its APP0 segment right after SOI: put the comment behind it.
    if data[2:4] == b"\xff\xe0":
        pos = 4 + struct.unpack(">H", data[4:6])[0]
    return data[:pos] + segment + data[pos:]


def capture_info(image_path: Path) -> dict | None:
    """The `facekit:` comment capture stamped into a JPEG, or None (not stamped, not a JPEG).

    Reads only the header segments, never the pixels; a malformed file gives None.
    """
    try:
        with open(image_path, "rb") as f:
            head = f.read(2)
            if head != b"\xff\xd8":
                return None
            while True:
                marker = f.read(2)
                if len(marker) < 2 or marker[0] != 0xFF:
                    return None
                kind = marker[1]
                if kind == 0xD8 or 0xD0 <= kind <= 0xD7 or kind == 0x01:  # no length field
                    continue
                if kind in (0xDA, 0xD9):  # start of scan / end of image: headers are over
                    return None
                raw = f.read(2)
                if len(raw) < 2:
                    return None
                length = struct.unpack(">H", raw)[0]
                body = f.read(length - 2)
                if kind == 0xFE and body.startswith(COMMENT_PREFIX):
                    info = json.loads(body[len(COMMENT_PREFIX):].decode("utf-8"))
                    return info if isinstance(info, dict) else None
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def session_of(image_path: Path) -> str | None:
    """The capture session id stamped into an image by `datatool capture`, or None."""
    info = capture_info(image_path)
    session = info.get("session") if info else None
    return str(session) if session else None
