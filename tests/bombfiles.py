"""Decompression bombs, made cheaply: PNG files whose header claims a huge picture while the file
on disk stays a few kilobytes. Used by the tests and by `bench/bombs.py`."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _ihdr(width: int, height: int, colour: int = 0) -> bytes:
    # 8-bit depth; colour 0 = grayscale (1 byte a pixel), 2 = RGB
    return _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0))


def header_bomb(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims `width` x `height` and whose pixel data is one short row of zeros:
    valid up to the header, truncated after (a size check must refuse it before decoding)."""
    idat = zlib.compress(b"\0" * min(width + 1, 1024))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _ihdr(width, height) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    return path


def zero_png(path: Path, width: int, height: int) -> Path:
    """A complete, decodable grayscale PNG of `width` x `height` black pixels, written by streaming
    zlib over the zero rows: about 1 KB on disk per megapixel, and no pixel array in memory."""
    comp = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte 0, then the row's pixels
    parts = []
    for _ in range(height):
        parts.append(comp.compress(row))
    parts.append(comp.flush())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _ihdr(width, height) + _chunk(b"IDAT", b"".join(parts))
                     + _chunk(b"IEND", b""))
    return path
