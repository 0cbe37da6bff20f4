"""Small helpers the format modules share: reading annotation text, safe keys, refusing to
overwrite, copying images, number formatting, progress bars. No format knowledge lives here."""

from __future__ import annotations

import math
import os
import shutil
import sys
from pathlib import Path, PurePosixPath
from typing import Iterable

from ..core.errors import AnnotationError, OutputExistsError
from ..core.fsutil import atomic_path
from ..core.issues import Issue

def read_text(path: Path, *, what: str, encoding: str = "utf-8-sig") -> str:
    """The text of an annotation file; `AnnotationError` naming the file when it is missing,
    unreadable or not text (e.g. an image given by mistake). `what` names it: "COCO file".

    A leading UTF-8 byte-order mark (Windows Notepad writes one) is dropped: left in, it glued
    itself to the first name of the file (a WIDER file line, a YOLO class). Other encodings
    (Latin-1, UTF-16) are refused rather than guessed, since a wrong guess renames things."""
    try:
        return Path(path).read_text(encoding=encoding)
    except FileNotFoundError as e:
        raise AnnotationError(f"{path}: {what} not found") from e
    except UnicodeDecodeError as e:
        raise AnnotationError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}): "
                              f"is it a {what}? If so, save it as UTF-8") from e
    except OSError as e:
        raise AnnotationError(f"{path}: cannot read ({e.strerror or e})") from e


LIMIT = 1e9  # no coordinate is this large; bigger numbers would overflow box arithmetic to inf


def finite(value) -> bool:
    """Whether `value` (from a parsed file) is a real number a float can hold: not a bool, NaN,
    infinity, or an integer too large for a float (`math.isfinite` raises OverflowError on those)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def brief(value) -> str:
    """A value from a file, short enough for a one-line message: `'a 400-digit integer'` for a
    huge integer, else its repr cut to a few dozen characters (nested lists only a few levels)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10 ** 18:
        return f"a {len(str(abs(value)))}-digit integer"
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother, short.maxlist, short.maxdict = 3, 40, 40, 6, 4
    return short.repr(value)


def size_text(width, height) -> str:
    """`64x48`; values too long to sit beside an `x` are spaced: `a 400-digit integer x 48`."""
    w, h = brief(width), brief(height)
    return f"{w}x{h}" if len(w) <= 12 and len(h) <= 12 else f"{w} x {h}"


def size_problem(width, height) -> str | None:
    """Why `width` x `height` (as a file states them) cannot be an image's size, or None.

    A size is two positive integers (`640.0` counts as one; some tools write floats) whose
    product is at most `core.images.max_pixels()`, the same guard every image read applies.
    """
    from ..core import images

    def whole(v) -> bool:
        if isinstance(v, int) and not isinstance(v, bool):
            return v > 0
        return isinstance(v, float) and finite(v) and v > 0 and v.is_integer()

    if not (whole(width) and whole(height)):
        return f"expected positive integers, got {brief(width)}/{brief(height)}"
    limit = images.max_pixels()  # FACEKIT_MAX_PIXELS, as for every image read
    if int(width) * int(height) > limit:
        return f"{size_text(width, height)} is more than {limit} pixels (set FACEKIT_MAX_PIXELS to raise the limit)"
    return None


def safe_key(key: str, *, where: str) -> str:
    """A dataset key (path relative to an images folder) that cannot escape it.

    Keys come from annotation files (`file_name`, WIDER file lines, CSV cells), so a hostile or
    broken file could say `../../x.jpg`; that is refused with the file and field in `where`.
    """
    text = str(key).replace("\\", "/").strip()
    path = PurePosixPath(text)
    if not text or path.is_absolute() or ".." in path.parts or text.endswith("/"):
        raise AnnotationError(f"{where}: {key!r} is not a relative image path inside the images folder")
    return path.as_posix()


def labeled_with_safe_keys(samples) -> list:
    """The labeled samples, each key checked by `safe_key` (what every exporter writes)."""
    return [s.replace(image_id=safe_key(s.image_id, where=f"{s.image_path}: image_id")) for s in samples if s.labeled]


def check_free(paths: Iterable[Path], *, overwrite: bool) -> None:
    """Refuse (before anything is written) if any destination already exists and `overwrite` is off."""
    if overwrite:
        return
    taken = [p for p in paths if Path(p).exists()]
    if taken:
        more = f" (and {len(taken) - 1} more)" if len(taken) > 1 else ""
        raise OutputExistsError(f"{taken[0]}: already exists{more} (use --overwrite to replace)")


def copy_image(src: Path, dst: Path, *, overwrite: bool) -> None:
    """Copy an image's bytes to `dst` atomically; copying a file onto itself is a no-op."""
    src, dst = Path(src), Path(dst)
    if dst.exists() and src.exists() and os.path.samefile(src, dst):
        return
    with atomic_path(dst, overwrite=overwrite) as tmp:
        shutil.copyfile(src, tmp)


def num(value: float) -> str:
    """A float as short exact text: `10.0` -> `10`, `10.25` -> `10.25` (repr round-trips)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def progress(items, *, desc: str, enabled: bool, total: int | None = None):
    """A tqdm bar on stderr when `enabled`, else the plain iterable."""
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, total=total, unit="img", file=sys.stderr, leave=False, dynamic_ncols=True)


def raise_first_error(found: list[Issue], issues: list[Issue] | None) -> None:
    """The shared contract of every reader: with an `issues` list, collect; without one, raise the first error."""
    if issues is not None:
        issues.extend(found)
        return
    for issue in found:
        if issue.severity == "error":
            raise AnnotationError(path=issue.file, field=issue.field, reason=issue.message, code=issue.code)
