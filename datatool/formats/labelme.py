"""labelme JSON (as labelme 6.3.1 writes it): read into a `Sample`, write back.

One JSON per image, beside it, same stem. Shapes of type `rectangle` are boxes; labelme
stores a rectangle as two opposite corners in the order they were dragged, and lets them
lie outside the image, so every reader here reorders and clips (and reports it).
Polygons become their bounding box (with a warning); other shape types are rejected.

facekit keeps its own per-image data (`group`, capture `session`, `person`) in a top-level
`facekit` object, which labelme preserves when it re-saves a file.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ..core.errors import AnnotationError
from ..core.images import IMAGE_EXTENSIONS
from ..core.issues import Issue
from ..core.sample import Box, Sample

LABELME_VERSION = "6.3.1"  # the version string we write; labelme reads any 5.x/6.x file
FACEKIT_KEY = "facekit"


def _find_image(json_path: Path, image_path_field: str | None) -> Path:
    """The image a labelme JSON belongs to: its `imagePath`, else a same-stem image beside it."""
    if image_path_field:
        # labelme writes the path relative to the JSON, with the separator of the OS it ran on.
        candidate = json_path.parent / image_path_field.replace("\\", "/")
        if candidate.exists():
            return candidate
    for ext in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS):
        candidate = json_path.with_suffix(ext)
        if candidate.exists():
            return candidate
    if image_path_field:
        return json_path.parent / image_path_field.replace("\\", "/")
    return json_path.with_suffix(".jpg")


def load_json(json_path: Path) -> dict:
    json_path = Path(json_path)
    try:
        text = json_path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise AnnotationError(f"failed to load '{json_path}': file not found") from e
    except UnicodeDecodeError as e:
        raise AnnotationError(f"failed to load '{json_path}': not UTF-8 text") from e
    except OSError as e:
        raise AnnotationError(f"failed to load '{json_path}': {e.strerror}") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise AnnotationError(f"failed to load '{json_path}': not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from e
    if not isinstance(data, dict) or "shapes" not in data:
        raise AnnotationError(f"failed to load '{json_path}': not a labelme file (no top-level 'shapes' list)")
    return data


def _number(v) -> bool:
    # Python's json accepts NaN and Infinity, which would otherwise reach Box (ValueError) or int()
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def parse_labelme(data: dict, json_path: Path, *, issues: list[Issue] | None = None,
                  image_id: str | None = None) -> Sample:
    """Turn a loaded labelme dict into a `Sample`, normalizing rectangles.

    Every problem is appended to `issues` (if given) with its field, e.g. `shapes[3].points`.
    Without an `issues` list, the first error raises `AnnotationError`.
    """
    json_path = Path(json_path)
    found: list[Issue] = []
    name = str(json_path)

    def report(severity, field, message, code, fixable=False):
        found.append(Issue(severity, name, field, message, code, fixable))

    shapes = data.get("shapes")
    if not isinstance(shapes, list):
        raise AnnotationError(f"failed to load '{json_path}': shapes: expected a list, got {type(shapes).__name__}")

    width, height = data.get("imageWidth"), data.get("imageHeight")
    if not (_number(width) and _number(height) and width > 0 and height > 0):
        raise AnnotationError(
            f"failed to load '{json_path}': imageWidth/imageHeight: expected positive numbers, got {width!r}/{height!r}")
    width, height = int(width), int(height)

    image_field = data.get("imagePath")
    if image_field is not None and not isinstance(image_field, str):
        report("error", "imagePath", f"expected a string, got {type(image_field).__name__}", "bad-field")
        image_field = None
    image_path = _find_image(json_path, image_field)
    if image_field and image_path.name != Path(image_field.replace("\\", "/")).name and image_path.exists():
        report("warning", "imagePath", f"{image_field!r} not found; using {image_path.name} beside the JSON",
               "image-path-mismatch", fixable=True)

    boxes: list[Box] = []
    for i, shape in enumerate(shapes):
        where = f"shapes[{i}]"
        if not isinstance(shape, dict):
            report("error", where, "expected an object", "bad-shape")
            continue
        label = shape.get("label")
        if not isinstance(label, str) or not label.strip():
            report("error", f"{where}.label", "missing or empty label", "bad-label")
            continue
        kind = shape.get("shape_type") or "polygon"  # labelme's default when the field is absent
        pts = shape.get("points")
        if not isinstance(pts, list) or not all(
                isinstance(p, (list, tuple)) and len(p) == 2 and all(_number(c) for c in p) for p in pts):
            report("error", f"{where}.points", "expected a list of [x, y] number pairs", "bad-points")
            continue
        if kind == "rectangle":
            if len(pts) != 2:
                report("error", f"{where}.points", f"rectangle needs 2 points, got {len(pts)}", "bad-points")
                continue
            (x1, y1), (x2, y2) = pts
            if x1 > x2 or y1 > y2:
                report("info", f"{where}.points", "corners not in top-left/bottom-right order (normalized)",
                       "corner-order", fixable=True)
        elif kind == "polygon":
            if len(pts) < 3:
                report("error", f"{where}.points", f"polygon needs at least 3 points, got {len(pts)}", "bad-points")
                continue
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
            report("warning", f"{where}.shape_type", "polygon converted to its bounding box", "polygon")
        else:
            report("error", f"{where}.shape_type",
                   f"{kind!r} shapes are not supported (draw faces as rectangles)", "unsupported-shape")
            continue
        attrs = {}
        if shape.get("group_id") is not None:
            attrs["group_id"] = shape["group_id"]
        if shape.get("description"):
            attrs["description"] = shape["description"]
        if shape.get("flags"):
            attrs["flags"] = shape["flags"]
        box = Box.from_corners(x1, y1, x2, y2, label=label.strip(), attributes=attrs)
        if not box.is_inside(width, height):
            clipped = box.clip(width, height)
            report("warning", f"{where}.points",
                   f"box {_fmt(box)} extends outside the {width}x{height} image (clipped to {_fmt(clipped)})",
                   "box-out-of-bounds", fixable=True)
            box = clipped
        if box.width <= 0 or box.height <= 0:
            report("error", f"{where}.points", f"zero-area box {_fmt(box)} (dropped)", "zero-area-box")
            continue
        boxes.append(box)

    extra = data.get(FACEKIT_KEY) or {}
    if not isinstance(extra, dict):
        report("warning", FACEKIT_KEY, "expected an object (ignored)", "bad-field")
        extra = {}
    attributes = {k: v for k, v in extra.items() if k != "group"}
    if data.get("flags"):
        attributes["flags"] = data["flags"]

    if issues is not None:
        issues.extend(found)
    else:
        for issue in found:
            if issue.severity == "error":
                raise AnnotationError(f"failed to load '{json_path}': {issue.field}: {issue.message}")

    return Sample(
        image_path=image_path,
        width=width,
        height=height,
        boxes=tuple(boxes),
        image_id=image_id or image_path.name,
        group=str(extra.get("group", "") or ""),
        labeled=True,
        annotation_path=json_path,
        attributes=attributes,
    )


def read_labelme(json_path: Path, *, issues: list[Issue] | None = None, image_id: str | None = None) -> Sample:
    """Read a labelme JSON into a `Sample` (boxes in pixels, corners ordered, clipped to the image)."""
    return parse_labelme(load_json(json_path), Path(json_path), issues=issues, image_id=image_id)


def _fmt(box: Box) -> str:
    return f"[{box.x_min:g}, {box.y_min:g}, {box.x_max:g}, {box.y_max:g}]"


def to_labelme_dict(sample: Sample, json_path: Path, *, image_data: str | None = None) -> dict:
    """The labelme 6.3.1 dict for a sample; `imagePath` relative to the JSON's folder."""
    json_path = Path(json_path)
    rel = os.path.relpath(Path(sample.image_path).absolute(), json_path.parent.absolute())
    shapes = []
    for box in sample.boxes:
        attrs = dict(box.attributes)
        shapes.append({
            "label": box.label,
            "points": [[box.x_min, box.y_min], [box.x_max, box.y_max]],
            "group_id": attrs.get("group_id"),
            "description": attrs.get("description", ""),
            "shape_type": "rectangle",
            "flags": attrs.get("flags", {}),
            "mask": None,
        })
    attributes = dict(sample.attributes)
    flags = attributes.pop("flags", {})
    data = {
        "version": LABELME_VERSION,
        "flags": flags,
        "shapes": shapes,
        "imagePath": Path(rel).as_posix(),
        "imageData": image_data,
        "imageHeight": sample.height,
        "imageWidth": sample.width,
    }
    extra = {**({"group": sample.group} if sample.group else {}), **attributes}
    if extra:
        data[FACEKIT_KEY] = extra
    return data


def dumps_labelme(sample: Sample, json_path: Path) -> str:
    """Serialized JSON text, deterministic for the same sample (used for byte-identical outputs)."""
    return json.dumps(to_labelme_dict(sample, json_path), indent=2, ensure_ascii=False) + "\n"


def write_labelme(sample: Sample, json_path: Path, *, overwrite: bool = False) -> Path:
    """Write `sample` as a labelme JSON at `json_path` (atomically; refuses to replace without `overwrite`)."""
    from ..core.fsutil import write_text_atomic

    json_path = Path(json_path)
    write_text_atomic(json_path, dumps_labelme(sample, json_path), overwrite=overwrite)
    return json_path


def json_path_for(image_path: Path) -> Path:
    """Where the labelme JSON of an image lives: beside it, same stem."""
    return Path(image_path).with_suffix(".json")


# --- A whole labelme folder (the dataset-level interface every format module offers) ---------

_STANDARD_SHAPE_KEYS = ("group_id", "description", "flags")


def _attrs_to_description(attributes) -> dict:
    """Box attributes labelme has no field for (e.g. WIDER's `blur`) ride in the shape's
    `description` as `key=value` words, which labelme shows and keeps; `read` parses them back."""
    attrs = dict(attributes or {})
    extra = {k: v for k, v in attrs.items() if k not in _STANDARD_SHAPE_KEYS}
    if not extra or attrs.get("description"):
        return attrs
    if not all(isinstance(v, (int, float, str)) and not isinstance(v, bool) and str(v) and " " not in str(v)
               and "=" not in str(v) for v in extra.values()):
        return attrs
    kept = {k: v for k, v in attrs.items() if k in _STANDARD_SHAPE_KEYS}
    kept["description"] = " ".join(f"{k}={v}" for k, v in extra.items())
    return kept


def _description_to_attrs(attributes) -> dict:
    """Inverse of `_attrs_to_description`: `"blur=1 pose=0"` -> `{"blur": 1, "pose": 0}`."""
    attrs = dict(attributes or {})
    text = attrs.get("description")
    if not isinstance(text, str) or not text.strip():
        return attrs
    parsed = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if not sep or not key.isidentifier() or not value or "=" in value:
            return attrs  # free text: leave the description as it is
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                pass
        parsed[key] = value
    attrs.pop("description")
    attrs.update(parsed)
    return attrs


def read(src: Path, *, images: Path | None = None, issues: list[Issue] | None = None) -> list[Sample]:
    """Every image of a labelme folder (dataset root or bare folder) with its JSON beside it.

    Unlabeled images (no JSON) come back with `labeled=False`; JSONs without an image are
    reported as warnings. `images`, if given, is read instead of `src` (same layout rules).
    """
    from ..dataset import load_dataset
    from ._io import raise_first_error

    ds = load_dataset(Path(images) if images is not None else Path(src))
    found = list(ds.issues)
    for jp in ds.orphan_jsons:
        found.append(Issue("warning", str(jp), "imagePath", "labelme JSON without an image beside it (ignored)",
                           "orphan-json"))
    raise_first_error(found, issues)
    return [s.replace(boxes=tuple(_with_attrs(b, _description_to_attrs(b.attributes)) for b in s.boxes))
            for s in ds.samples]


def _with_attrs(box: Box, attributes: dict) -> Box:
    from dataclasses import replace

    return replace(box, attributes=attributes)


def write(samples: list[Sample], out: Path, *, overwrite: bool = False, copy_images: bool = True,
          progress_bar: bool = False) -> None:
    """Write a labelme folder: each image to `out/images/<image_id>` with its JSON beside it.

    Unlabeled samples get their image only (they stay unlabeled). With `copy_images=False` only
    the JSONs are written, for images already at those places. Refuses existing files unless
    `overwrite`, checking every destination before writing anything.
    """
    from ..dataset import IMAGES
    from ._io import check_free, copy_image, progress, safe_key

    out = Path(out)
    plan = []
    for s in samples:
        key = safe_key(s.image_id, where=f"{s.annotation_path or s.image_path}: image_id")
        dst = out / IMAGES / key
        plan.append((s, dst, json_path_for(dst) if s.labeled else None))
    keys = [str(dst) for _, dst, _ in plan]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise AnnotationError(f"{dup}: two samples share this image key (keys must be unique)")
    check_free([p for _, dst, jp in plan for p in ((dst, jp) if copy_images else (jp,)) if p is not None],
               overwrite=overwrite)
    for s, dst, jp in progress(plan, desc="write labelme", enabled=progress_bar):
        if copy_images:
            copy_image(s.image_path, dst, overwrite=overwrite)
        if jp is not None:
            boxes = tuple(_with_attrs(b, _attrs_to_description(b.attributes)) for b in s.boxes)
            write_labelme(s.replace(image_path=dst, boxes=boxes, annotation_path=jp), jp, overwrite=overwrite)
