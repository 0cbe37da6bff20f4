"""labelme JSON (as labelme 6.3.1 writes it): read into a `Sample`, write back.

One JSON per image, beside it, same stem. Shapes of type `rectangle` are boxes; labelme
stores a rectangle as two opposite corners in the order they were dragged, and lets them
lie outside the image, so every reader here reorders and clips (and reports it).
Polygons become their bounding box (with a warning); other shape types are rejected.

facekit keeps its own per-image data (`group`, capture `session`, `person`) in a top-level
`facekit` object, which labelme preserves when it re-saves a file. Box attributes labelme has
no field for (e.g. WIDER's `blur`) ride in the shape's `description` as `key=value` words,
which labelme shows and keeps: the parser decodes them into attributes and the writer encodes
them, so every consumer sees `{"blur": 1}`.

This module reads and writes one file at a time; `datatool.dataset` walks folders.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

from ..core.errors import LabelmeLoadError
from ..core.images import IMAGE_EXTENSIONS
from ..core.issues import Issue
from ..core.sample import Box, Sample
from ._io import brief, finite, size_problem, size_text

LABELME_VERSION = "6.3.1"  # the version string we write; labelme reads any 5.x/6.x file
FACEKIT_KEY = "facekit"


def image_path_target(json_path: Path, image_path_field) -> Path | None:
    """Where a JSON's `imagePath` leads: labelme reads it relative to the JSON's folder, with
    either separator (it was written on whatever OS labelme ran on). None when absent."""
    if not isinstance(image_path_field, str) or not image_path_field:
        return None
    return Path(json_path).parent / image_path_field.replace("\\", "/")


def image_path_field(json_path: Path, image: Path) -> str:
    """The `imagePath` that leads from a JSON to `image` (the inverse of `image_path_target`):
    relative to the JSON's folder, with `/`, as labelme writes it. The usual case, the image
    beside its JSON, needs no resolving against the working folder (augment writes thousands)."""
    folder, (image_folder, name) = os.path.dirname(json_path), os.path.split(image)
    rel = name if image_folder == folder else os.path.relpath(os.path.abspath(image), os.path.abspath(folder))
    return Path(rel).as_posix()


def points_to(data: dict, json_path: Path, image: Path) -> bool:
    """Whether the JSON's `imagePath` leads to `image` (an existing file)."""
    target = image_path_target(json_path, data.get("imagePath"))
    if target is None:
        return False
    if target == image:
        return True
    try:
        return target.exists() and target.resolve() == Path(image).resolve()
    except OSError:
        return False


def _find_image(json_path: Path, image_path_field: str | None) -> Path:
    """The image a labelme JSON belongs to: its `imagePath`, else a same-stem image beside it."""
    target = image_path_target(json_path, image_path_field)
    if target is not None and target.exists():
        return target
    for ext in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS):
        candidate = json_path.with_suffix(ext)
        if candidate.exists():
            return candidate
    return target if target is not None else json_path.with_suffix(".jpg")


def _path(p) -> Path:
    return p if isinstance(p, Path) else Path(p)


def load_json(json_path: Path) -> dict:
    """The dict of a labelme JSON; `LabelmeLoadError` (path and reason) when it cannot be one."""
    json_path = _path(json_path)
    try:
        text = json_path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise LabelmeLoadError(path=json_path, reason="file not found") from e
    except UnicodeDecodeError as e:
        raise LabelmeLoadError(path=json_path, reason="not UTF-8 text") from e
    except OSError as e:
        raise LabelmeLoadError(path=json_path, reason=str(e.strerror)) from e
    from ..core.fsutil import parse_json

    data = parse_json(text, path=json_path, error=LabelmeLoadError)
    if not isinstance(data, dict) or "shapes" not in data:
        raise LabelmeLoadError(path=json_path, reason="not a labelme file (no top-level 'shapes' list)",
                               code="not-labelme")
    return data


def _number(v) -> bool:
    # Python's json accepts NaN, Infinity and integers of any length, which would otherwise reach
    # Box (ValueError) or float arithmetic (OverflowError)
    return finite(v)


def valid_points(pts) -> bool:
    """Whether `points` is a list of `[x, y]` pairs of finite numbers."""
    return isinstance(pts, list) and all(
        isinstance(p, (list, tuple)) and len(p) == 2 and _number(p[0]) and _number(p[1]) for p in pts)


# --- shape attributes in `description` ----------------------------------------------------

_STANDARD_SHAPE_KEYS = ("group_id", "description", "flags")  # labelme's own shape fields


def _word_value(text: str):
    """`"1"` -> 1, `"0.75"` -> 0.75, anything else (`"1.50"`, `"mtcnn"`) stays text, so that
    writing the value back gives the same word."""
    for cast in (int, float):
        try:
            value = cast(text)
        except ValueError:
            continue
        return value if str(value) == text else text
    return text


def decode_description(text) -> dict | None:
    """`"blur=1 pose=0"` -> `{"blur": 1, "pose": 0}`; None for free text (kept as the description)."""
    if not isinstance(text, str) or not text.strip():
        return None
    parsed = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if not sep or not key.isidentifier() or key in _STANDARD_SHAPE_KEYS or not value or "=" in value:
            return None
        parsed[key] = _word_value(value)
    return parsed


def encode_description(attributes) -> str:
    """The shape `description` for box attributes: the description itself if there is one,
    else the attributes labelme has no field for as `key=value` words (when each value is one
    word), else empty."""
    attrs = dict(attributes or {})
    if attrs.get("description"):
        return str(attrs["description"])
    extra = {k: v for k, v in attrs.items() if k not in _STANDARD_SHAPE_KEYS}
    if extra and all(isinstance(v, (int, float, str)) and not isinstance(v, bool) and str(v) and " " not in str(v)
                     and "=" not in str(v) for v in extra.values()):
        return " ".join(f"{k}={v}" for k, v in extra.items())
    return ""


def shape_attributes(shape: dict) -> dict:
    """A shape's attributes as every consumer sees them: `group_id`, `flags`, and the
    description decoded into attributes (or kept as `description` when it is free text)."""
    attrs = {}
    if shape.get("group_id") is not None:
        attrs["group_id"] = shape["group_id"]
    description = shape.get("description")
    if description:
        decoded = decode_description(description)
        attrs.update(decoded if decoded is not None else {"description": description})
    if shape.get("flags"):
        attrs["flags"] = shape["flags"]
    return attrs


# --- one file -------------------------------------------------------------------------------

def parse_labelme(data: dict, json_path: Path, *, issues: list[Issue] | None = None,
                  image_id: str | None = None, image_path: Path | None = None,
                  shape_index: list[int] | None = None) -> Sample:
    """Turn a loaded labelme dict into a `Sample`, normalizing rectangles.

    Every problem is appended to `issues` (if given) with its field, e.g. `shapes[3].points`.
    Without an `issues` list, the first error raises `AnnotationError`. `image_path`: the image
    this JSON is paired with, when the caller knows it (else found from `imagePath`).
    `shape_index`, if given, receives for each box of the sample the index of its shape.
    """
    json_path = _path(json_path)
    found: list[Issue] = []
    name = str(json_path)

    def report(severity, field, message, code, fixable=False):
        found.append(Issue(severity, name, field, message, code, fixable))

    shapes = data.get("shapes")
    if not isinstance(shapes, list):
        raise LabelmeLoadError(path=json_path, field="shapes", reason=f"expected a list, got {type(shapes).__name__}")

    width, height = data.get("imageWidth"), data.get("imageHeight")
    problem = size_problem(width, height)
    if problem:
        raise LabelmeLoadError(path=json_path, field="imageWidth/imageHeight", reason=problem)
    width, height = int(width), int(height)

    image_field = data.get("imagePath")
    if image_field is not None and not isinstance(image_field, str):
        report("error", "imagePath", f"expected a string, got {type(image_field).__name__}", "bad-field")
        image_field = None
    if image_path is None:
        image_path = _find_image(json_path, image_field)
        fell_back = image_field and image_path.name != Path(image_field.replace("\\", "/")).name \
            and image_path.exists()
    elif image_field and os.path.join(os.path.dirname(name), image_field) == str(image_path):
        fell_back = False  # the usual case, told apart without building paths
    else:
        target = image_path_target(json_path, image_field)
        fell_back = target is not None and target.name != image_path.name and not target.exists()
    if fell_back:
        report("warning", "imagePath", f"{brief(image_field)} not found; using {image_path.name} beside the JSON",
               "image-path-mismatch", fixable=True)

    boxes: list[Box] = []
    for i, shape in enumerate(shapes):
        where = f"shapes[{i}]"
        if not isinstance(shape, dict):
            report("error", where, "expected an object", "bad-shape")
            continue
        label = shape.get("label")
        if label is not None and not isinstance(label, str):
            report("error", f"{where}.label", f"expected a string, got {brief(label)}", "bad-label")
            continue
        if not label or not label.strip():
            report("error", f"{where}.label", "missing or empty label", "bad-label")
            continue
        kind = shape.get("shape_type") or "polygon"  # labelme's default when the field is absent
        pts = shape.get("points")
        if not valid_points(pts):
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
                   f"{brief(kind)} shapes are not supported (draw faces as rectangles)", "unsupported-shape")
            continue
        box = Box.from_corners(x1, y1, x2, y2, label=label.strip(), attributes=shape_attributes(shape))
        if not box.is_inside(width, height):
            clipped = box.clip(width, height)
            report("warning", f"{where}.points",
                   f"box {_fmt(box)} extends outside the {width}x{height} image (clipped to {_fmt(clipped)})",
                   "box-out-of-bounds", fixable=True)
            box = clipped
        if box.width <= 0 or box.height <= 0:
            report("error", f"{where}.points", f"zero-area box {_fmt(box)}", "zero-area-box")
            continue
        boxes.append(box)
        if shape_index is not None:
            shape_index.append(i)

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
                raise LabelmeLoadError(path=json_path, field=issue.field, reason=issue.message, code=issue.code)

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


def read_labelme(json_path: Path, *, issues: list[Issue] | None = None, image_id: str | None = None,
                 image_path: Path | None = None) -> Sample:
    """Read a labelme JSON into a `Sample` (boxes in pixels, corners ordered, clipped to the image)."""
    json_path = _path(json_path)
    return parse_labelme(load_json(json_path), json_path, issues=issues, image_id=image_id,
                         image_path=image_path)


def _fmt(box: Box) -> str:
    return f"[{box.x_min:g}, {box.y_min:g}, {box.x_max:g}, {box.y_max:g}]"


def to_labelme_dict(sample: Sample, json_path: Path, *, image_data: str | None = None) -> dict:
    """The labelme 6.3.1 dict for a sample; `imagePath` relative to the JSON's folder."""
    shapes = []
    for box in sample.boxes:
        attrs = dict(box.attributes)
        shapes.append({
            "label": box.label,
            "points": [[box.x_min, box.y_min], [box.x_max, box.y_max]],
            "group_id": attrs.get("group_id"),
            "description": encode_description(attrs),
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
        "imagePath": image_path_field(json_path, sample.image_path),
        "imageData": image_data,
        "imageHeight": sample.height,
        "imageWidth": sample.width,
    }
    extra = {**({"group": sample.group} if sample.group else {}), **attributes}
    if extra:
        data[FACEKIT_KEY] = extra
    return data


_ENCODE = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode


def dumps_labelme(sample: Sample, json_path: Path) -> str:
    """Serialized JSON text, deterministic for the same sample (used for byte-identical outputs).

    One top-level field per line and one shape per line: as easy to read and diff as labelme's
    own `indent=2`, but every value goes through json's C encoder (with `indent` set, json falls
    back to its pure-Python encoder, which cost augment 7% of its time)."""
    data = to_labelme_dict(sample, json_path)
    lines = []
    for key, value in data.items():
        if key == "shapes" and value:
            inner = ",\n".join(f"    {_ENCODE(shape)}" for shape in value)
            lines.append(f'  "shapes": [\n{inner}\n  ]')
        else:
            lines.append(f"  {_ENCODE(key)}: {_ENCODE(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def write_labelme(sample: Sample, json_path: Path, *, overwrite: bool = False) -> Path:
    """Write `sample` as a labelme JSON at `json_path` (atomically; refuses to replace without `overwrite`)."""
    from ..core.fsutil import write_text_atomic

    json_path = Path(json_path)
    write_text_atomic(json_path, dumps_labelme(sample, json_path), overwrite=overwrite)
    return json_path


def json_path_for(image_path: Path) -> Path:
    """Where the labelme JSON of an image lives: beside it, same stem."""
    return Path(image_path).with_suffix(".json")




# --- the safe fixes (`datatool validate --fix`): each edits a labelme dict in place ----------
# and returns what it changed, in words; none deletes a shape or touches an image.

def fix_size(data: dict, width: int, height: int) -> list[str]:
    """Set `imageWidth/imageHeight` to the image's displayed size."""
    if (data.get("imageWidth"), data.get("imageHeight")) == (width, height):
        return []
    change = f"imageWidth/imageHeight {size_text(data.get('imageWidth'), data.get('imageHeight'))} -> {width}x{height}"
    data["imageWidth"], data["imageHeight"] = width, height
    return [change]


def fix_image_path(data: dict, json_path: Path, image: Path) -> list[str]:
    """Point `imagePath` at `image` (relative to the JSON's folder, as labelme writes it)."""
    if points_to(data, json_path, image):
        return []
    rel = image_path_field(json_path, image)
    change = f"imagePath {brief(data.get('imagePath'))} -> {rel!r}"
    data["imagePath"] = rel
    return [change]


def fix_shapes(data: dict, width: int, height: int) -> list[str]:
    """Order rectangle corners and clip rectangles and polygon points to `width` x `height`.

    A shape that clipping would shrink to nothing is left as it is (validation keeps reporting
    it): no shape is ever deleted.
    """
    changes = []
    shapes = data.get("shapes")
    for i, shape in enumerate(shapes if isinstance(shapes, list) else []):
        if not isinstance(shape, dict) or not valid_points(shape.get("points")):
            continue
        pts = shape["points"]
        kind = shape.get("shape_type") or "polygon"
        if kind == "rectangle" and len(pts) == 2:
            box = Box.from_corners(*pts[0], *pts[1])
            clipped = box.clip(width, height)
            if clipped.width > 0 and clipped.height > 0:
                box = clipped
            fixed = [[box.x_min, box.y_min], [box.x_max, box.y_max]]
        elif kind == "polygon" and len(pts) >= 3:
            fixed = [[min(max(x, 0.0), float(width)), min(max(y, 0.0), float(height))] for x, y in pts]
            xs, ys = [p[0] for p in fixed], [p[1] for p in fixed]
            if max(xs) - min(xs) <= 0 or max(ys) - min(ys) <= 0:
                continue
        else:
            continue
        if [list(map(float, p)) for p in pts] != fixed:
            what = []
            if kind == "rectangle" and (pts[0][0] > pts[1][0] or pts[0][1] > pts[1][1]):
                what.append("corners reordered")
            if any(not (0 <= x <= width and 0 <= y <= height) for x, y in pts):
                what.append(f"clipped to {width}x{height}")
            changes.append(f"shapes[{i}] {' and '.join(what) or 'normalized'}")
            shape["points"] = fixed
    return changes


def safe_fixes(data: dict, json_path: Path, image: Path, width: int, height: int) -> tuple[dict, list[str]]:
    """Every safe fix on a copy of `data`: `(fixed copy, what changed)`; nothing changed -> empty list.
    `width` x `height` is the image's displayed size, `image` the image beside the JSON."""
    new = copy.deepcopy(data)
    changes = fix_size(new, width, height) + fix_image_path(new, json_path, image) + fix_shapes(new, width, height)
    return new, changes
