"""Safe image loading: EXIF orientation applied, corrupt and oversized files reported by name.

Sizes and pixels here are always of the image *as displayed* (what labelme shows), which for
a phone photo with an EXIF rotation differs from the stored pixel grid.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .errors import ImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
MAX_PIXELS = 120_000_000  # larger than any camera; guards against decompression bombs
EXIF_ORIENTATION_TAG = 0x0112


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: image not found")
    try:
        return Image.open(path)
    except UnidentifiedImageError as e:
        raise ImageError(f"{path}: not an image or unsupported format") from e
    except Image.DecompressionBombError as e:
        raise ImageError(f"{path}: image larger than {MAX_PIXELS} pixels, refusing to load") from e
    except OSError as e:
        raise ImageError(f"{path}: cannot read image ({e})") from e


def exif_orientation(path: Path) -> int:
    """The EXIF orientation tag (1 = upright, 6 = rotate 90 CW to display, ...)."""
    with _open(path) as im:
        try:
            return int(im.getexif().get(EXIF_ORIENTATION_TAG, 1) or 1)
        except Exception:  # malformed EXIF block: treat as upright, as viewers do
            return 1


def image_info(path: Path) -> tuple[int, int, int, int, str]:
    """`(display_width, display_height, stored_width, stored_height, format)` from the header only."""
    with _open(path) as im:
        w, h = im.size
        try:
            orientation = int(im.getexif().get(EXIF_ORIENTATION_TAG, 1) or 1)
        except Exception:
            orientation = 1
        fmt = (im.format or "").lower()
    if orientation in (5, 6, 7, 8):  # transposed: width and height swap on display
        return h, w, w, h, fmt
    return w, h, w, h, fmt


def image_size(path: Path) -> tuple[int, int]:
    """`(width, height)` as displayed, read from the header without decoding pixels."""
    w, h, *_ = image_info(path)
    return w, h


def load_rgb(path: Path):
    """Decode to an RGB uint8 array of shape (height, width, 3), EXIF orientation applied.

    Fully decodes, so a truncated or corrupt file raises `ImageError` here rather than later.
    """
    import numpy as np
    from PIL import ImageOps

    with _open(path) as im:
        try:
            im.load()
            im = ImageOps.exif_transpose(im)
            arr = np.asarray(im.convert("RGB"))
        except (OSError, SyntaxError, ValueError) as e:
            raise ImageError(f"{path}: corrupt or truncated image ({e})") from e
    return arr


def encode_jpeg(rgb, quality: int = 95) -> bytes:
    """RGB uint8 array -> JPEG bytes (no EXIF: pixels are already upright)."""
    import cv2

    ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ImageError("JPEG encoding failed")
    return buf.tobytes()


def decode_rgb(data: bytes, *, name: str = "<bytes>"):
    """Encoded image bytes -> RGB uint8 array, EXIF orientation applied."""
    import io

    import numpy as np
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    except Exception as e:
        raise ImageError(f"{name}: corrupt or unsupported image ({e})") from e
