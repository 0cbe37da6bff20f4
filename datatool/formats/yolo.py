"""YOLO (Darknet / Ultralytics) txt labels.

Layout written: `out/images/<key>`, `out/labels/<key stem>.txt`, `out/classes.txt` (one name a
line; the line number, from 0, is the class id) and `out/data.yaml` (train/val point at
`images`, relative to the yaml, which Ultralytics resolves from the yaml's own folder).
A label line is `class cx cy w h`, the box centre and size normalized to [0, 1] by the image
size (6 decimals). A negative has an empty txt. Reading, an image without a txt is unlabeled;
writing leaves unlabeled images out, since YOLO trainers take an image without a txt as background.
Box attributes have no place in YOLO and are not written.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..core.errors import AnnotationError, DatatoolError, ImageError
from ..core.images import image_size, is_image
from ..core.issues import Issue
from ..core.sample import Box, Sample
from ._io import LIMIT, check_free, copy_image, labeled_with_safe_keys, progress, raise_first_error, read_text

IMAGES = "images"
LABELS = "labels"
CLASSES = "classes.txt"
DATA_YAML = "data.yaml"


def label_line(box: Box, class_id: int, width: int, height: int) -> str:
    """`class cx cy w h`, normalized by the image size."""
    cx, cy = (box.x_min + box.x_max) / 2 / width, (box.y_min + box.y_max) / 2 / height
    return f"{class_id} {cx:.6f} {cy:.6f} {box.width / width:.6f} {box.height / height:.6f}"


def parse_label_file(txt: Path, *, names: list[str], width: int, height: int, issues: list[Issue]) -> list[Box]:
    """Boxes of one YOLO txt (pixels); bad lines are reported as `line N` issues and skipped."""
    name = str(txt)
    try:
        lines = txt.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise AnnotationError(f"{name}: cannot read YOLO labels ({e})") from e
    boxes = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            values = [float(p) for p in parts[1:]]
            cls = int(parts[0])
        except (ValueError, IndexError):
            values, cls = [], -1
        if len(parts) != 5 or len(values) != 4 or not all(math.isfinite(v) and abs(v) < LIMIT for v in values):
            issues.append(Issue("error", name, f"line {n}", f"expected 'class cx cy w h', got {line.strip()!r}",
                                "bad-box"))
            continue
        if not 0 <= cls < len(names):
            issues.append(Issue("error", name, f"line {n}", f"class {parts[0]} not in {CLASSES} (0..{len(names) - 1})",
                                "bad-label"))
            continue
        cx, cy, w, h = values
        if w < 0 or h < 0:
            issues.append(Issue("error", name, f"line {n}", "negative width/height", "bad-box"))
            continue
        box = Box((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height,
                  label=names[cls])
        if not box.is_inside(width, height, tol=1e-3):
            issues.append(Issue("warning", name, f"line {n}", "box extends outside the image (clipped)",
                                "box-out-of-bounds", fixable=True))
        boxes.append(box.clip(width, height))
    return boxes


def _read_names(root: Path) -> list[str] | None:
    classes = root / CLASSES
    if classes.is_file():
        text = read_text(classes, what="YOLO classes file")
        return [ln.strip() for ln in text.splitlines() if ln.strip()]
    data = root / DATA_YAML
    if data.is_file():
        import yaml

        from ..core.safeyaml import load_yaml

        try:  # aliases bounded: a 'billion laughs' data.yaml is refused, not expanded
            doc = load_yaml(read_text(data, what="YOLO data.yaml"), path=data, error=AnnotationError)
        except yaml.YAMLError as e:
            raise AnnotationError(f"{data}: not valid YAML ({type(e).__name__}: {str(e)[:200]})") from e
        if not isinstance(doc, dict):
            raise AnnotationError(f"{data}: expected a mapping with a 'names' key, got {type(doc).__name__}")
        return names_list(doc.get("names"), where=f"{data}: names")
    return None


def names_list(names, *, where: str) -> list[str]:
    """`data.yaml`'s `names` as a list indexed by class id: a list, or a mapping from class ids to
    names. Ids may be ints or digit strings (`0: face` or `'0': face`), mixed too, as Ultralytics
    reads them with `int(key)`; they must be 0..n-1, each once, or the labels' ids would point
    at the wrong names. `AnnotationError` naming `where` otherwise."""
    if isinstance(names, list):
        items = list(enumerate(names))
    elif isinstance(names, dict):
        items = []
        for key, value in names.items():
            try:
                if isinstance(key, bool) or isinstance(key, float):
                    raise ValueError
                items.append((int(str(key).strip()), value))
            except ValueError:
                raise AnnotationError(f"{where}: key {key!r} is not a class id (0, 1, ...)") from None
    else:
        raise AnnotationError(f"{where}: expected a list or a mapping of class names, got "
                              f"{type(names).__name__ if names is not None else 'nothing'}")
    by_id: dict[int, str] = {}
    for cid, value in items:
        if isinstance(value, (dict, list)) or value is None:
            raise AnnotationError(f"{where}: class {cid}: expected a name, got {value!r}")
        if cid in by_id:
            raise AnnotationError(f"{where}: class id {cid} is given twice ({by_id[cid]!r} and {str(value)!r})")
        by_id[cid] = str(value)
    if not by_id:
        raise AnnotationError(f"{where}: no class names")
    if sorted(by_id) != list(range(len(by_id))):
        raise AnnotationError(f"{where}: class ids must be 0..{len(by_id) - 1}, each once; got "
                              f"{', '.join(str(k) for k in sorted(by_id))}")
    return [by_id[k] for k in range(len(by_id))]


def read(src: Path, *, images: Path | None = None, issues: list[Issue] | None = None) -> list[Sample]:
    """Read a YOLO folder (`images/`, `labels/`, `classes.txt` or `data.yaml`); image sizes come
    from the image headers. `images` overrides `src/images`."""
    src = Path(src)
    if not src.is_dir():
        raise DatatoolError(f"{src}: YOLO folder not found")
    images = Path(images) if images is not None else src / IMAGES
    labels = src / LABELS
    if not images.is_dir() or not labels.is_dir():
        raise DatatoolError(f"{src}: not a YOLO folder (expected {IMAGES}/ and {LABELS}/)")
    names = _read_names(src)
    if names is None:
        raise DatatoolError(f"{src}: no {CLASSES} or {DATA_YAML} naming the classes")
    found: list[Issue] = []
    samples = []
    for img in sorted((p for p in images.rglob("*") if p.is_file() and is_image(p)),
                      key=lambda p: p.relative_to(images).as_posix()):
        key = img.relative_to(images).as_posix()
        try:
            width, height = image_size(img)
        except ImageError as e:
            found.append(Issue.from_error(e, code="bad-image"))
            continue
        txt = labels / Path(key).with_suffix(".txt")
        if not txt.is_file():
            samples.append(Sample(image_path=img, width=width, height=height, image_id=key, labeled=False))
            continue
        boxes = parse_label_file(txt, names=names, width=width, height=height, issues=found)
        samples.append(Sample(image_path=img, width=width, height=height, boxes=tuple(boxes), image_id=key,
                              annotation_path=txt))
    raise_first_error(found, issues)
    return samples


def write(samples: list[Sample], out: Path, *, overwrite: bool = False, copy_images: bool = True,
          progress_bar: bool = False) -> None:
    """Write images, one txt per labeled image, `classes.txt` and `data.yaml` (see the module doc)."""
    from ..core.fsutil import write_text_atomic

    out = Path(out)
    labeled = labeled_with_safe_keys(samples)
    names = sorted({b.label for s in labeled for b in s.boxes}) or ["face"]
    for n in names:  # classes.txt holds one name a line: a break inside one would shift every id after it
        if n.splitlines() != [n]:
            where = next(s.annotation_path or s.image_path for s in labeled if any(b.label == n for b in s.boxes))
            raise AnnotationError(f"{where}: label {n!r} contains a line break, which cannot be written to "
                                  f"YOLO's {CLASSES} (one class name per line); rename the label")
    class_id = {n: i for i, n in enumerate(names)}
    plan = [(s, out / LABELS / Path(s.image_id).with_suffix(".txt"), out / IMAGES / s.image_id) for s in labeled]
    check_free([out / CLASSES, out / DATA_YAML] + [p for _, t, i in plan for p in ((t, i) if copy_images else (t,))],
               overwrite=overwrite)
    for s, txt, img in progress(plan, desc="write YOLO", enabled=progress_bar):
        if copy_images:
            copy_image(s.image_path, img, overwrite=overwrite)
        text = "".join(label_line(b, class_id[b.label], s.width, s.height) + "\n" for b in s.boxes)
        write_text_atomic(txt, text, overwrite=overwrite)
    write_text_atomic(out / CLASSES, "".join(n + "\n" for n in names), overwrite=overwrite)
    yaml_names = "\n".join(f"  {i}: {json.dumps(n)}" for i, n in enumerate(names))
    write_text_atomic(out / DATA_YAML,
                      "# written by facekit; paths are relative to this file's folder\n"
                      f"train: {IMAGES}\nval: {IMAGES}\nnc: {len(names)}\nnames:\n{yaml_names}\n",
                      overwrite=overwrite)
