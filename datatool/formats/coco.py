"""COCO object-detection JSON: one file for the whole dataset, images in a folder beside it.

Layout written: `out/annotations.json` and `out/images/<image_id>` (`file_name` = the key).
Conventions at this edge: `bbox` is `[x, y, width, height]` in pixels (continuous, like ours:
`x_max = x + width`); category ids are 1-based in label order (sorted names); image and
annotation ids are 1-based in sample order. An image with no annotations is a negative.
facekit keeps a sample's `group` and attributes in an image entry's `facekit` object and a
box's attributes in the annotation's `attributes` object (as CVAT does); other tools ignore both.
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import AnnotationError, DatatoolError, ImageError
from ..core.images import image_size
from ..core.issues import Issue
from ..core.sample import Box, Sample
from ..core.fsutil import parse_json
from ._io import (LIMIT, brief, check_free, copy_image, finite, labeled_with_safe_keys, progress, raise_first_error,
                  read_text, safe_key, size_problem)

ANNOTATIONS = "annotations.json"
IMAGES = "images"


def _num(v) -> bool:
    return finite(v) and abs(v) < LIMIT


def _id(v):
    """An id usable as a dict key (COCO ids are ints; some tools write strings), else None."""
    return v if isinstance(v, (int, str)) and not isinstance(v, bool) else None


def _list(data: dict, key: str, name: str) -> list:
    value = data.get(key, [] if key == "annotations" else None)
    if not isinstance(value, list):
        got = "missing" if value is None else type(value).__name__
        raise AnnotationError(f"{name}: {key}: expected a list ({got})")
    return value


def read_coco(json_path: Path, images_root: Path, *, issues: list[Issue] | None = None) -> list[Sample]:
    """Read a COCO detection JSON; `images_root` is the folder `file_name`s are relative to.

    Structural problems (not JSON, no `images` list) raise `AnnotationError` naming the file;
    per-entry problems are appended to `issues` with their field, e.g. `annotations[3].bbox`
    (without an `issues` list the first error raises). Boxes outside the image are clipped.
    """
    json_path, images_root = Path(json_path), Path(images_root)
    name = str(json_path)
    text = read_text(json_path, what="COCO file")
    data = parse_json(text, path=json_path, error=AnnotationError)
    if not isinstance(data, dict):
        raise AnnotationError(f"{name}: not a COCO file (expected an object with 'images')")
    images, annotations = _list(data, "images", name), _list(data, "annotations", name)
    categories = data.get("categories", [])
    if not isinstance(categories, list):
        raise AnnotationError(f"{name}: categories: expected a list")

    found: list[Issue] = []

    def report(severity, field, message, code, fixable=False):
        found.append(Issue(severity, name, field, message, code, fixable))

    labels = {}
    for i, c in enumerate(categories):
        if not isinstance(c, dict) or not isinstance(c.get("name"), str) or _id(c.get("id")) is None:
            report("error", f"categories[{i}]", "expected an object with 'id' and 'name'", "bad-category")
            continue
        labels[c["id"]] = c["name"]

    entries = {}  # image id -> [key, path, width, height, boxes, entry]
    for i, im in enumerate(images):
        where = f"images[{i}]"
        if not isinstance(im, dict) or _id(im.get("id")) is None or not isinstance(im.get("file_name"), str):
            report("error", where, "expected an object with 'id' and 'file_name'", "bad-image-entry")
            continue
        try:
            key = safe_key(im["file_name"], where=f"{name}: {where}.file_name")
        except AnnotationError:
            report("error", f"{where}.file_name",
                   f"{brief(im['file_name'])} is not a relative path inside the images folder", "bad-image-entry")
            continue
        if im["id"] in entries:
            report("error", f"{where}.id", f"duplicate image id {brief(im['id'])}", "duplicate-id")
            continue
        path = images_root / key
        w, h = im.get("width"), im.get("height")
        if w in (None, 0) or h in (None, 0):
            try:  # some exporters leave sizes out (or write 0); the image header has them
                w, h = image_size(path)
            except ImageError as e:
                report("error", f"{where}.width", f"no valid width/height and {e}", "bad-size")
                continue
        problem = size_problem(w, h)
        if problem:
            report("error", f"{where}.width/height", problem, "bad-size")
            continue
        entries[im["id"]] = [key, path, int(w), int(h), [], im]

    broken = set()  # ids of images with a bad annotation: left out whole, not with a face missing
    for i, ann in enumerate(annotations):
        where = f"annotations[{i}]"
        if not isinstance(ann, dict):
            report("error", where, "expected an object", "bad-annotation")
            continue
        entry = entries.get(_id(ann.get("image_id")))
        if entry is None:
            report("error", f"{where}.image_id", f"no image with id {brief(ann.get('image_id'))}", "bad-annotation")
            continue
        label = labels.get(_id(ann.get("category_id")))
        if label is None:
            report("error", f"{where}.category_id", f"no category with id {brief(ann.get('category_id'))}",
                   "bad-annotation")
            broken.add(ann["image_id"])
            continue
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_num(v) for v in bbox)):
            report("error", f"{where}.bbox", f"expected [x, y, width, height] numbers, got {brief(bbox)}", "bad-box")
            broken.add(ann["image_id"])
            continue
        x, y, bw, bh = bbox
        if bw < 0 or bh < 0:
            report("error", f"{where}.bbox", f"negative width/height in {bbox}", "bad-box")
            broken.add(ann["image_id"])
            continue
        if ann.get("iscrowd"):
            report("warning", f"{where}.iscrowd", "crowd region kept as a box", "crowd")
        attrs = ann.get("attributes") if isinstance(ann.get("attributes"), dict) else {}
        box = Box.from_xywh(x, y, bw, bh, label=label, attributes=dict(attrs))
        _, _, w, h, boxes, _ = entry
        if not box.is_inside(w, h):
            report("warning", f"{where}.bbox", f"box extends outside the {w}x{h} image (clipped)",
                   "box-out-of-bounds", fixable=True)
            box = box.clip(w, h)
        boxes.append(box)

    samples = []
    for image_id, (key, path, w, h, boxes, im) in entries.items():
        if image_id in broken:
            continue
        extra = im.get("facekit") if isinstance(im.get("facekit"), dict) else {}
        samples.append(Sample(image_path=path, width=w, height=h, boxes=tuple(boxes), image_id=key,
                              group=str(extra.get("group", "") or ""), annotation_path=json_path,
                              attributes={k: v for k, v in extra.items() if k != "group"}))
    raise_first_error(found, issues)
    return samples


def to_coco_dict(samples: list[Sample]) -> dict:
    """The COCO dict for the labeled samples (unlabeled ones are left out)."""
    from .. import __version__

    labeled = [s for s in samples if s.labeled]
    names = sorted({b.label for s in labeled for b in s.boxes})
    cat_id = {n: i + 1 for i, n in enumerate(names)}  # COCO: category ids start at 1
    images, annotations = [], []
    for image_id, s in enumerate(labeled, start=1):
        entry = {"id": image_id, "file_name": s.image_id, "width": s.width, "height": s.height}
        extra = {**({"group": s.group} if s.group else {}), **dict(s.attributes)}
        if extra:
            entry["facekit"] = extra
        images.append(entry)
        for b in s.boxes:
            ann = {"id": len(annotations) + 1, "image_id": image_id, "category_id": cat_id[b.label],
                   "bbox": [b.x_min, b.y_min, b.width, b.height], "area": b.area, "iscrowd": 0,
                   "segmentation": []}
            if b.attributes:
                ann["attributes"] = dict(b.attributes)
            annotations.append(ann)
    return {
        "info": {"description": "exported by facekit", "version": __version__},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": cat_id[n], "name": n, "supercategory": "none"} for n in names],
    }


def write_coco(samples: list[Sample], json_path: Path, *, images_root: Path | None = None,
               overwrite: bool = False, progress_bar: bool = False) -> Path:
    """Write the COCO JSON and, if `images_root` is given, copy the images to `images_root/<image_id>`."""
    from ..core.fsutil import write_json_atomic

    json_path = Path(json_path)
    labeled = labeled_with_safe_keys(samples)
    targets = [Path(images_root) / s.image_id for s in labeled] if images_root is not None else []
    check_free([json_path, *targets], overwrite=overwrite)
    for s, dst in progress(list(zip(labeled, targets)), desc="copy images", enabled=progress_bar):
        copy_image(s.image_path, dst, overwrite=overwrite)
    write_json_atomic(json_path, to_coco_dict(labeled), overwrite=overwrite)
    return json_path


def _find_json(src: Path) -> Path:
    src = Path(src)
    if src.is_file():
        return src
    if src.is_dir():
        if (src / ANNOTATIONS).is_file():
            return src / ANNOTATIONS
        found = sorted(p for p in src.glob("*.json") if p.name != "dataset.json")
        if len(found) == 1:
            return found[0]
        raise DatatoolError(f"{src}: expected one COCO JSON ({ANNOTATIONS}) in this folder, found {len(found)}")
    raise DatatoolError(f"{src}: COCO file not found")


def read(src: Path, *, images: Path | None = None, issues: list[Issue] | None = None) -> list[Sample]:
    """Read COCO: `src` is the JSON (or a folder holding `annotations.json`); `images` the folder
    `file_name`s are relative to (default: `images/` beside the JSON, else the JSON's folder)."""
    json_path = _find_json(src)
    if images is None:
        images = json_path.parent / IMAGES if (json_path.parent / IMAGES).is_dir() else json_path.parent
    return read_coco(json_path, Path(images), issues=issues)


def write(samples: list[Sample], out: Path, *, overwrite: bool = False, copy_images: bool = True,
          progress_bar: bool = False) -> None:
    """Write `out/annotations.json` and the images to `out/images/<image_id>`."""
    out = Path(out)
    write_coco(samples, out / ANNOTATIONS, images_root=out / IMAGES if copy_images else None,
               overwrite=overwrite, progress_bar=progress_bar)
