"""`datatool.core.images`: the header probe agrees with Pillow, one EXIF rule, the size guard."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from datatool.core import images
from datatool.core.errors import ImageError


def _encoded(fmt: str = "JPEG", *, size=(6, 4), mode: str = "RGB", orientation: int | None = None,
             xmp: bytes | None = None) -> bytes:
    im = Image.fromarray(np.full((size[1], size[0], 3), 90, np.uint8)).convert(mode)
    kw = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[images.EXIF_ORIENTATION_TAG] = orientation
        kw["exif"] = exif.tobytes()
    if xmp is not None:
        kw["xmp"] = xmp
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _mpo() -> bytes:
    im = Image.fromarray(np.full((4, 6, 3), 90, np.uint8))
    buf = io.BytesIO()
    im.save(buf, "MPO", save_all=True, append_images=[im])
    return buf.getvalue()


def _pillow_says(data: bytes):
    with Image.open(io.BytesIO(data)) as im:
        o = int(im.getexif().get(images.EXIF_ORIENTATION_TAG, 1) or 1)
        return im.size, o, im.format.lower(), im.mode


@pytest.mark.parametrize("data", [
    _encoded(),  # plain JFIF JPEG, the webcam case
    *[_encoded(orientation=o) for o in range(1, 9)],  # every EXIF orientation
    _encoded(mode="L"),  # grey JPEG
    _encoded(mode="CMYK"),  # CMYK JPEG: not storable as is
    _encoded(xmp=b'<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'),  # orientation in XMP only
    _encoded("PNG"),  # not a JPEG: Pillow reads the header
    _mpo(),  # two JPEGs in one file (some phone cameras): Pillow says MPO, so must we
])
def test_probe_agrees_with_pillow(data, tmp_path):
    (w, h), orientation, fmt, mode = _pillow_says(data)
    path = tmp_path / "x.img"
    path.write_bytes(data)
    for got in (images.probe(data), images.probe(path)):
        assert (got.stored_width, got.stored_height, got.orientation, got.format, got.mode) == (w, h, orientation,
                                                                                                 fmt, mode)
        assert (got.width, got.height) == ((h, w) if orientation in (5, 6, 7, 8) else (w, h))
        assert got.transposed == images.transposes(orientation)


def test_decoded_size_is_the_probed_display_size():
    data = _encoded(orientation=6)
    p = images.probe(data)
    assert images.decode_rgb(data).shape[:2] == (p.height, p.width) == (6, 4)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_size_guard_reads_the_header_only(monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 6 * 4 - 1)
    for fn in (images.probe, images.decode_rgb, images.verify):
        with pytest.raises(ImageError, match="larger than 23 pixels") as info:
            fn(_encoded(), name="big.jpg")
        assert info.value.path == "big.jpg" and "larger than" in info.value.reason


@pytest.mark.parametrize("data,reason", [
    (b"hello, not an image", "not an image"),  # text named .jpg
    (_encoded()[:40], "Truncated"),  # JPEG cut inside its header
])
def test_probe_names_the_file_and_reason(data, reason, tmp_path):
    path = tmp_path / "bad.jpg"
    path.write_bytes(data)
    with pytest.raises(ImageError) as info:
        images.probe(path)
    assert info.value.path == str(path) and reason in info.value.reason
    assert str(info.value).startswith(f"{path}: ")


def test_verify_catches_what_the_header_hides():
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    data = buf.getvalue()
    assert images.probe(data[: len(data) // 2]).width == 64  # the header survives the cut
    with pytest.raises(ImageError, match="truncated"):
        images.verify(data[: len(data) // 2])
