"""CSV: one row per box, for spreadsheets and pandas.

Layout written: `out/annotations.csv` and `out/images/<key>`. Columns:
`image,width,height,label,x_min,y_min,x_max,y_max,group,attributes` - `image` is the key
(relative to `images/`), coordinates are facekit's continuous pixels, `attributes` the box's
attributes as JSON (empty when none). A negative (an image with no face) is one row whose
label and coordinates are empty. Unlabeled images are not written.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from ..core.errors import AnnotationError, DatatoolError
from ..core.fsutil import parse_json
from ..core.issues import Issue
from ..core.sample import Box, Sample
from ._io import (LIMIT, brief, check_free, copy_image, labeled_with_safe_keys, num, progress, raise_first_error,
                  read_text, safe_key, size_problem)

FILENAME = "annotations.csv"
IMAGES = "images"
COLUMNS = ("image", "width", "height", "label", "x_min", "y_min", "x_max", "y_max", "group", "attributes")
BOX_COLUMNS = ("x_min", "y_min", "x_max", "y_max")


def dumps_csv(samples: list[Sample]) -> str:
    """The CSV text for the labeled samples (header + one row per box, one per negative)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for s in samples:
        if not s.labeled:
            continue
        if not s.boxes:
            w.writerow([s.image_id, s.width, s.height, "", "", "", "", "", s.group, ""])
        for b in s.boxes:
            attrs = json.dumps(dict(b.attributes), ensure_ascii=False, sort_keys=True) if b.attributes else ""
            w.writerow([s.image_id, s.width, s.height, b.label, num(b.x_min), num(b.y_min), num(b.x_max),
                        num(b.y_max), s.group, attrs])
    return buf.getvalue()


def read_csv(csv_path: Path, images_root: Path, *, issues: list[Issue] | None = None) -> list[Sample]:
    """Read the CSV written by `dumps_csv`; rows of one image are gathered into one sample.

    A missing column raises `AnnotationError`; a bad cell is reported as `line N: column`
    (raised without an `issues` list). Boxes outside the image are clipped (warning).
    """
    csv_path, images_root = Path(csv_path), Path(images_root)
    name = str(csv_path)
    text = read_text(csv_path, what="CSV file", encoding="utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in COLUMNS[:8] if c not in (reader.fieldnames or [])]
    if missing:
        raise AnnotationError(f"{name}: line 1: missing column(s) {', '.join(missing)} "
                              f"(expected {','.join(COLUMNS)})")
    found: list[Issue] = []
    gathered: dict[str, dict] = {}
    broken = set()  # images with a bad row: left out whole rather than with a face missing
    try:
        rows = list(reader)
    except csv.Error as e:
        raise AnnotationError(f"{name}: line {reader.line_num}: {e}") from e
    for n, row in enumerate(rows, start=2):
        key = None
        try:
            key = _key(row)
            width, height = _size(row)
            entry = gathered.setdefault(key, {"width": width, "height": height, "boxes": [],
                                              "group": row.get("group") or ""})
            if (entry["width"], entry["height"]) != (width, height):
                raise _Bad("width", f"{key}: size {width}x{height} differs from an earlier row's "
                                    f"{entry['width']}x{entry['height']}")
            box = _box(row)
        except _Bad as e:
            found.append(Issue("error", name, f"line {n}: {e.column}", e.message, "bad-field"))
            if key is not None:
                broken.add(key)
            continue
        if box is None:
            continue  # a negative: the image is listed, with no face
        coords = [float(row[c]) for c in BOX_COLUMNS]
        if coords[0] > coords[2] or coords[1] > coords[3]:
            found.append(Issue("info", name, f"line {n}: x_min", "min/max swapped (normalized)", "corner-order", True))
        if not box.is_inside(width, height):
            found.append(Issue("warning", name, f"line {n}: x_min",
                               f"box outside the {width}x{height} image (clipped)", "box-out-of-bounds", True))
            box = box.clip(width, height)
        entry["boxes"].append(box)
    raise_first_error(found, issues)
    return [Sample(image_path=images_root / key, width=e["width"], height=e["height"], boxes=tuple(e["boxes"]),
                   image_id=key, group=e["group"], annotation_path=csv_path)
            for key, e in gathered.items() if key not in broken]


class _Bad(Exception):
    def __init__(self, column: str, message: str):
        super().__init__(message)
        self.column, self.message = column, message


def _key(row: dict) -> str:
    try:
        return safe_key(row.get("image") or "", where="image")
    except AnnotationError:
        raise _Bad("image", f"{brief(row.get('image'))} is not a relative path inside the images folder") from None


def _size(row: dict) -> tuple[int, int]:
    try:  # ValueError too for digits past Python's int-string limit
        width, height = int(row["width"]), int(row["height"])
    except (TypeError, ValueError):
        width = height = 0
    problem = size_problem(width, height)
    if problem:
        raise _Bad("width", problem if width > 0 and height > 0 else
                   f"expected positive integer width/height, got {brief(row['width'])}/{brief(row['height'])}")
    return width, height


def _box(row: dict) -> Box | None:
    """The row's box, or None for a negative's row (label and coordinates all empty)."""
    cells = [(row[c] or "").strip() for c in BOX_COLUMNS]
    label = (row["label"] or "").strip()
    if not label and not any(cells):
        return None
    if not label:
        raise _Bad("label", "empty label on a row with a box")
    for column, cell in zip(BOX_COLUMNS, cells):
        if not _is_number(cell):
            raise _Bad(column, f"expected a number, got {brief(row[column])}")
    attrs = {}
    if (row.get("attributes") or "").strip():
        try:
            attrs = parse_json(row["attributes"], path="")
        except DatatoolError as e:
            raise _Bad("attributes", f"expected a JSON object: {e.reason}") from None
        if not isinstance(attrs, dict):
            raise _Bad("attributes", f"expected a JSON object, got {brief(row['attributes'])}")
    return Box.from_corners(*(float(c) for c in cells), label=label, attributes=attrs)


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text)) and abs(float(text)) < LIMIT
    except ValueError:
        return False


def read(src: Path, *, images: Path | None = None, issues: list[Issue] | None = None) -> list[Sample]:
    """Read `src` (the CSV, or a folder holding `annotations.csv`); images from `images`
    (default: `images/` beside the CSV, else its folder)."""
    src = Path(src)
    path = src / FILENAME if src.is_dir() else src
    if not path.is_file():
        raise DatatoolError(f"{path}: CSV file not found")
    if images is None:
        images = path.parent / IMAGES if (path.parent / IMAGES).is_dir() else path.parent
    return read_csv(path, Path(images), issues=issues)


def write(samples: list[Sample], out: Path, *, overwrite: bool = False, copy_images: bool = True,
          progress_bar: bool = False) -> None:
    """Write `out/annotations.csv` and copy the images to `out/images/<key>`."""
    from ..core.fsutil import write_text_atomic

    out = Path(out)
    labeled = labeled_with_safe_keys(samples)
    targets = [out / IMAGES / s.image_id for s in labeled] if copy_images else []
    check_free([out / FILENAME, *targets], overwrite=overwrite)
    for s, dst in progress(list(zip(labeled, targets)), desc="copy images", enabled=progress_bar):
        copy_image(s.image_path, dst, overwrite=overwrite)
    write_text_atomic(out / FILENAME, dumps_csv(labeled), overwrite=overwrite)
