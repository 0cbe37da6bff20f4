"""All image IO: probe (header only), decode (EXIF applied, size guard), encode.

Sizes and pixels here are always of the image *as displayed* (what labelme shows), which for
a phone photo with an EXIF rotation differs from the stored pixel grid. The one rule for
that is `transposes(orientation)`; every size that leaves this module has it applied.

Every way in checks the pixel limit (`max_pixels()`: `MAX_PIXELS`, or the environment variable
`FACEKIT_MAX_PIXELS`) from the header before any pixel is decoded, so a decompression bomb - a
small file whose header claims gigapixels - is refused with an `ImageError` and costs no memory.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import ImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
MAX_PIXELS = 120_000_000  # larger than any camera; guards against decompression bombs
MAX_PIXELS_ENV = "FACEKIT_MAX_PIXELS"  # the one way to raise (or lower) it, for every command
EXIF_ORIENTATION_TAG = 0x0112
_TRANSPOSING = frozenset((5, 6, 7, 8))  # EXIF orientations that turn the picture by 90 degrees
_HEADER_BYTES = 1 << 17  # a JPEG header (with an EXIF thumbnail) almost always fits in 128 KiB


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


# Image files people have that facekit does not read (animated or palette GIFs, phone HEIC, raw
# camera files...): named so that a label made for one is reported as such, not as a lost JSON.
OTHER_IMAGE_EXTENSIONS = (".gif", ".heic", ".heif", ".avif", ".jxl", ".jp2", ".ico", ".ppm", ".pgm", ".pbm",
                          ".tga", ".psd", ".svg", ".dng", ".cr2", ".nef", ".arw")


def is_unsupported_image(path: Path) -> bool:
    """Whether `path` is an image file by its extension, but in a format facekit does not read."""
    return Path(path).suffix.lower() in OTHER_IMAGE_EXTENSIONS


def unsupported_format(path: Path) -> str:
    """Why `path` is not read as an image: the message for a file whose extension is not one of
    `IMAGE_EXTENSIONS` (a GIF, a HEIC), naming the extension and the supported ones."""
    ext = Path(path).suffix.lower() or "a file without an extension"
    return (f"{ext} images are not supported (supported: {', '.join(IMAGE_EXTENSIONS)}); "
            "save it as .jpg or .png")


def transposes(orientation: int) -> bool:
    """Whether EXIF `orientation` swaps width and height on display (5-8: a quarter turn)."""
    return orientation in _TRANSPOSING


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ImageProbe:
    """What an image's header says, without decoding a pixel."""

    width: int  # as displayed (EXIF orientation applied), the size labelme shows
    height: int
    stored_width: int  # the pixel grid in the file
    stored_height: int
    orientation: int  # EXIF orientation tag, 1 = upright
    format: str  # lower-case Pillow format name: "jpeg", "png", ...
    mode: str  # Pillow mode of the stored pixels: "RGB", "L", "CMYK", ...

    @property
    def transposed(self) -> bool:
        return transposes(self.orientation)


def max_pixels() -> int:
    """The largest image (width x height) any command decodes: `FACEKIT_MAX_PIXELS` if set, else
    `MAX_PIXELS`. Read on every call, so worker processes and tests see the same value."""
    from .errors import DatatoolError

    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return MAX_PIXELS
    try:
        limit = int(raw.replace("_", "")) if len(raw) <= 20 else -1
    except ValueError:
        limit = -1
    if limit < 1:
        raise DatatoolError(f"{MAX_PIXELS_ENV}={raw[:40]!r}: expected a positive whole number of pixels, "
                            f"e.g. {MAX_PIXELS_ENV}=250000000")
    return limit


def check_pixels(width: int, height: int, *, name: str) -> None:
    """`ImageError` naming the file if `width` x `height` (from a header) is over `max_pixels()`."""
    limit = max_pixels()
    if width * height > limit:
        raise ImageError(path=name, reason=_too_large(limit, f"{width}x{height}"))


def _too_large(limit: int, size: str = "") -> str:
    return (f"image {size + ' ' if size else ''}larger than {limit} pixels, refusing to decode it "
            f"(set {MAX_PIXELS_ENV} to raise the limit)")


def _make_probe(name: str, w: int, h: int, orientation: int, fmt: str, mode: str) -> ImageProbe:
    check_pixels(w, h, name=name)
    dw, dh = (h, w) if transposes(orientation) else (w, h)
    return ImageProbe(dw, dh, w, h, orientation, fmt, mode)


def _orientation_of(exif) -> int:
    try:
        return int(exif.get(EXIF_ORIENTATION_TAG, 1) or 1)
    except Exception:  # malformed EXIF block: treat as upright, as viewers do
        return 1


def _pil_open(source: Path | bytes, name: str):
    """`PIL.Image.open` with every failure as an `ImageError` naming the file."""
    import warnings

    from PIL import Image

    limit = max_pixels()
    # Pillow refuses twice this in `open` and only warns above it; every caller checks the size
    # itself (`check_pixels`) before decoding, so Pillow's raw warning would only repeat it badly
    Image.MAX_IMAGE_PIXELS = limit
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    try:
        return Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source)
    except Image.DecompressionBombError as e:
        raise ImageError(path=name, reason=_too_large(limit)) from e
    except FileNotFoundError as e:
        raise ImageError(path=name, reason="image not found") from e
    except OSError as e:
        if type(e).__name__ == "UnidentifiedImageError":
            raise ImageError(path=name, reason="not an image or unsupported format") from e
        raise ImageError(path=name, reason=f"cannot read image ({e.strerror or e})") from e
    except Exception as e:  # Pillow raises many types for broken headers
        raise ImageError(path=name, reason=f"not an image or unsupported format ({e})") from e


def _probe_pil(im, name: str) -> ImageProbe:
    w, h = im.size
    check_pixels(w, h, name=name)  # first: a PNG's `getexif` decodes the whole image
    try:
        exif = im.getexif()
    except Exception as e:  # a PNG with no eXIf chunk before its pixels is decoded to look for one after
        raise ImageError(path=name, reason=f"corrupt or truncated image ({e})") from e
    return _make_probe(name, w, h, _orientation_of(exif), (im.format or "").lower(), im.mode)


_SOF = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))
_JPEG_MODES = {1: "L", 3: "RGB", 4: "CMYK"}  # Pillow's mapping of component counts


def _scan_jpeg(data: bytes):
    """`(width, height, mode, exif_segment)` of a plain baseline/progressive JPEG, else None.

    Written here rather than asking Pillow because Pillow's `Image.open` parses every header
    segment (quantization tables included) in Python - about 0.1 ms per file, as long as
    writing the whole TFRecord for it - while a size and an orientation need only the frame
    header and the EXIF block. EXIF itself is still read by Pillow. Anything unusual (XMP
    orientation, other bit depths, truncated headers) returns None and goes to Pillow.
    """
    if not data.startswith(b"\xff\xd8\xff"):
        return None
    pos, end, exif, size = 2, len(data), None, None
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:  # start of scan: the header is over
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        if marker == 0xD9:  # end of image before any scan
            return None
        (length,) = struct.unpack_from(">H", data, pos + 2)
        segment = data[pos + 4:pos + 2 + length]
        if length < 2 or len(segment) != length - 2:
            return None
        if marker in _SOF:
            if size is not None or len(segment) < 6 or segment[0] != 8 or segment[5] not in _JPEG_MODES:
                return None
            h, w = struct.unpack_from(">HH", segment, 1)
            size = (w, h, _JPEG_MODES[segment[5]])
        elif marker == 0xE2 and segment.startswith(b"MPF\x00"):
            return None  # a multi-picture file: Pillow calls it MPO, not JPEG
        elif marker == 0xE1:
            if segment.startswith(b"Exif\x00\x00"):
                exif = exif if exif is not None else segment
            elif segment.startswith(b"http://ns.adobe.com/xap/1.0/"):
                return None  # XMP may carry the orientation: Pillow reads it
        pos += 2 + length
    else:
        return None
    if size is None or size[0] == 0 or size[1] == 0:
        return None
    return (*size, exif)


def _refuse_unsupported(path: Path, name: str) -> None:
    # Pillow opens a GIF, but no dataset walk lists one: a reader (COCO, VOC, CSV) that let it in
    # would write a labelme folder whose image every later stage skips.
    if is_unsupported_image(Path(path)):
        raise ImageError(path=name, reason=unsupported_format(Path(path)))


def probe(source: Path | bytes, *, name: str | None = None) -> ImageProbe:
    """Size as displayed, stored size, EXIF orientation, format and mode, from the header only.

    `source` is a path (only its first bytes are read, for JPEG) or the file's bytes. Raises
    `ImageError` for a missing file, something that is not an image, or one over `MAX_PIXELS`.
    """
    is_bytes = isinstance(source, (bytes, bytearray, memoryview))
    name = name or ("<bytes>" if is_bytes else str(source))
    if is_bytes:
        head = bytes(source)
    else:
        _refuse_unsupported(source, name)
        try:
            with open(source, "rb") as f:
                head = f.read(_HEADER_BYTES)
        except FileNotFoundError as e:
            raise ImageError(path=name, reason="image not found") from e
        except IsADirectoryError as e:
            raise ImageError(path=name, reason="not an image or unsupported format") from e
        except OSError as e:
            raise ImageError(path=name, reason=f"cannot read image ({e.strerror or e})") from e
    scanned = _scan_jpeg(head)
    if scanned is not None:
        w, h, mode, exif_segment = scanned
        orientation = 1
        if exif_segment is not None:
            from PIL import Image

            exif = Image.Exif()
            try:
                exif.load(exif_segment)
            except Exception:  # malformed EXIF: upright, as viewers do
                pass
            orientation = _orientation_of(exif)
        return _make_probe(name, w, h, orientation, "jpeg", mode)
    with _pil_open(head if is_bytes else source, name) as im:
        return _probe_pil(im, name)


def image_size(path: Path) -> tuple[int, int]:
    """`(width, height)` as displayed, read from the header without decoding pixels."""
    p = probe(path)
    return p.width, p.height


def _eight_bit(im):
    """`im` with 16-bit (or 32-bit integer) grey samples scaled to 8 bits, other modes unchanged.

    Pillow's `convert("RGB")` clips mode `I;16` / `I` samples at 255 instead of scaling them, so
    a 16-bit grey PNG came out nearly white with the face gone. Keeping the high byte (`v >> 8`)
    is what Pillow itself does for 16-bit colour PNGs and what OpenCV does (`decode_gray`), so
    every decode of one file agrees."""
    if not im.mode.startswith("I"):
        return im
    import numpy as np
    from PIL import Image

    values = np.asarray(im)
    if im.mode == "I":  # 32-bit signed: a 16-bit PNG in older Pillow, or an int TIFF
        values = np.clip(values, 0, 0xFFFF)
    return Image.fromarray((values >> 8).astype(np.uint8), mode="L")


def _decoded_rgb(source: Path | bytes, name: str, *, max_side: int | None = None):
    """Open, guard, decode fully, turn upright and convert to RGB: a uint8 array (h, w, 3).

    Turned and converted in place where nothing needs doing: Pillow's `exif_transpose` and
    `convert` return a full copy even then, two frame copies that took 40% of decoding a
    640x480 JPEG (augment decodes each source once per run)."""
    import numpy as np
    from PIL import Image, ImageOps

    with _pil_open(source, name) as im:
        _probe_pil(im, name)  # the MAX_PIXELS guard, before decoding
        try:
            im.load()
            ImageOps.exif_transpose(im, in_place=True)
            rgb = _eight_bit(im)
            if rgb.mode != "RGB":
                rgb = rgb.convert("RGB")
        except Exception as e:  # decoders raise many types for broken data
            raise ImageError(path=name, reason=f"corrupt or truncated image ({e})") from e
        if max_side is not None and max(rgb.size) > max_side:
            s = max_side / max(rgb.size)
            rgb = rgb.resize((max(1, round(rgb.width * s)), max(1, round(rgb.height * s))),
                             Image.Resampling.LANCZOS, reducing_gap=3.0)
        return np.asarray(rgb)  # a copy of the pixels: `im` is closed on leaving


def load_rgb(path: Path, *, max_side: int | None = None):
    """Decode to an RGB uint8 array of shape (height, width, 3), EXIF orientation applied.

    Fully decodes, so a truncated or corrupt file raises `ImageError` here rather than later.
    `max_side`: downscale (Lanczos) so the longest side is at most this many pixels.
    """
    _refuse_unsupported(path, str(path))
    return _decoded_rgb(Path(path), str(path), max_side=max_side)


def decode_rgb(data: bytes, *, name: str = "<bytes>", max_side: int | None = None):
    """Encoded image bytes -> RGB uint8 array, EXIF orientation applied (see `load_rgb`)."""
    return _decoded_rgb(data, name, max_side=max_side)


def verify(source: Path | bytes, *, name: str | None = None) -> ImageProbe:
    """Decode every pixel (a truncated JPEG fails only when its last rows are read) and return
    the header's facts; `ImageError` for anything unreadable. Keeps no pixels."""
    is_bytes = isinstance(source, (bytes, bytearray, memoryview))
    name = name or ("<bytes>" if is_bytes else str(source))
    with _pil_open(source, name) as im:
        facts = _probe_pil(im, name)
        try:
            im.load()
            decoded = im.size
        except (OSError, SyntaxError, ValueError) as e:
            raise ImageError(path=name, reason=f"corrupt or truncated image ({e})") from e
    if decoded != (facts.stored_width, facts.stored_height):
        raise ImageError(path=name, reason=f"header says {facts.stored_width}x{facts.stored_height} but the "
                         f"pixels decode to {decoded[0]}x{decoded[1]}")
    return facts


def require_strict_decoding() -> None:
    """Refuse to check images if something in this process asked Pillow to pad cut files
    silently (`ImageFile.LOAD_TRUNCATED_IMAGES`): `verify` would pass truncated images."""
    from PIL import ImageFile

    from .errors import DatatoolError

    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise DatatoolError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set: truncated images would go unnoticed")


def encode_jpeg(rgb, quality: int = 95) -> bytes:
    """RGB uint8 array -> JPEG bytes (no EXIF: pixels are already upright)."""
    import cv2

    # cvtColor makes one contiguous BGR copy; a reversed view (rgb[:, :, ::-1]) made imencode copy
    # it element by element, twice as slow for the same bytes
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ImageError("JPEG encoding failed")
    return buf.tobytes()


# --- grayscale decoding at a reduced scale (quality measures and perceptual hashes) ----------

REDUCED = {1: None, 2: "IMREAD_REDUCED_GRAYSCALE_2", 4: "IMREAD_REDUCED_GRAYSCALE_4", 8: "IMREAD_REDUCED_GRAYSCALE_8"}
MEASURE_SIDE = 256  # long side the quality measures and the perceptual hash work at


def reduction_for(width: int, height: int, *, side: int = MEASURE_SIDE) -> int:
    """The largest decode reduction (1, 2, 4 or 8) that keeps the long side at `side` px or more:
    a JPEG decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling) costs less than in full."""
    best = 1
    for f in (2, 4, 8):
        if max(width, height) / f >= side:
            best = f
    return best


def read_image_bytes(path, *, name: str | None = None) -> bytes:
    """An image file's bytes; `ImageError` naming it when it is missing or unreadable."""
    name = name or str(path)
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as e:
        raise ImageError(path=name, reason="image not found") from e
    except OSError as e:
        raise ImageError(path=name, reason=f"cannot read image ({e.strerror or e})") from e


def _source_bytes(source, name: str | None) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), name or "<bytes>"
    name = name or str(source)
    return read_image_bytes(source, name=name), name


def _check_header(data: bytes, name: str) -> None:
    """The pixel limit from the header alone (no EXIF, no pixels), before a decoder other than
    Pillow's sees `data`; `ImageError` for something that is not an image."""
    scanned = _scan_jpeg(data)
    if scanned is not None:
        check_pixels(scanned[0], scanned[1], name=name)
        return
    with _pil_open(data, name) as im:
        check_pixels(*im.size, name=name)


def decode_gray(source, *, name: str | None = None, reduce: int = 1):
    """A grayscale uint8 array of an image file (or its bytes, named `name` in errors) as
    displayed, at 1/`reduce` scale (1, 2, 4 or 8); `ImageError` naming the file if it is missing,
    corrupt or truncated."""
    import cv2
    import numpy as np

    data, name = _source_bytes(source, name)
    _check_header(data, name)  # OpenCV's own limit (2**30 pixels) is far above ours
    if data[:2] == b"\xff\xd8" and not data.rstrip(b"\0\r\n ")[-2:] == b"\xff\xd9":
        raise ImageError(path=name, reason="truncated JPEG (no end-of-image marker)")
    flag = getattr(cv2, REDUCED[reduce]) if REDUCED.get(reduce) else cv2.IMREAD_GRAYSCALE
    gray = cv2.imdecode(np.frombuffer(data, np.uint8), flag) if data else None
    if gray is None:
        raise ImageError(path=name, reason="corrupt or unsupported image")
    return gray


def decode_gray_reduced(source, *, name: str | None = None, side: int = MEASURE_SIDE):
    """`(gray, real size or None)`: the header (`probe`: size as displayed, and the pixel-count
    guard) picks a reduced decode (`reduction_for`) when the image is large enough and the decoded
    shape confirms it; else the full image (size None: the array's own)."""
    import math

    data, name = _source_bytes(source, name)
    p = probe(data, name=name)
    w, h = p.width, p.height
    f = reduction_for(w, h, side=side)
    if f > 1:
        gray = decode_gray(data, reduce=f, name=name)
        if gray.shape[:2] == (math.ceil(h / f), math.ceil(w / f)):
            return gray, (int(w), int(h))
    return decode_gray(data, name=name), None
