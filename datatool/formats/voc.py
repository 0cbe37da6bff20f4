"""Pascal VOC XML: one `<annotation>` file per image.

Layout written: `out/Annotations/<key>.xml` (the key with `.xml` for its extension),
`out/JPEGImages/<key>` and `out/ImageSets/Main/default.txt` (one key stem per line).

Coordinate convention at this edge: VOC stores 1-based, inclusive integer pixel indices, so a
box covering pixel columns 10..29 (facekit continuous `x_min=10, x_max=30`) is written
`xmin=11, xmax=30`. Writing: `xmin = round(x_min) + 1`, `xmax = round(x_max)`; reading the
inverse: `x_min = xmin - 1`, `x_max = xmax`. Integer boxes round-trip exactly; fractional ones
are rounded to the nearest pixel. Box attributes go to a CVAT-style `<attributes>` element.
"""

from __future__ import annotations

import math
from pathlib import Path
from xml.etree import ElementTree as ET

from ..core.errors import AnnotationError, DatatoolError, ImageError
from ..core.images import IMAGE_EXTENSIONS, image_size
from ..core.issues import Issue
from ..core.sample import Box, Sample
from ._io import (LIMIT, brief, check_free, copy_image, labeled_with_safe_keys, progress, raise_first_error, safe_key,
                  size_problem)

ANNOTATIONS = "Annotations"
IMAGES = "JPEGImages"
IMAGE_SET = Path("ImageSets") / "Main" / "default.txt"


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def read_voc_xml(xml_path: Path, images_root: Path, *, key_dir: str = "",
                 issues: list[Issue] | None = None) -> Sample:
    """Read one VOC XML; its image is `images_root/<key_dir>/<filename>`.

    A file that is not XML or not an `<annotation>` raises `AnnotationError` naming the file (and
    line); a bad object is reported as `object[i].bndbox` etc. (raised without an `issues` list).
    """
    xml_path = Path(xml_path)
    name = str(xml_path)
    try:
        root = ET.parse(xml_path).getroot()
    except FileNotFoundError as e:
        raise AnnotationError(f"{name}: VOC file not found") from e
    except ET.ParseError as e:
        line, col = e.position
        raise AnnotationError(f"{name}: not valid XML (line {line}, column {col})") from e
    if root.tag != "annotation":
        raise AnnotationError(f"{name}: not a VOC file (root element <{root.tag}>, expected <annotation>)")

    found: list[Issue] = []

    def report(severity, field, message, code, fixable=False):
        found.append(Issue(severity, name, field, message, code, fixable))

    prefix = f"{key_dir}/" if key_dir else ""
    filename = (root.findtext("filename") or "").strip()
    if filename:
        key = safe_key(prefix + Path(filename.replace("\\", "/")).name, where=f"{name}: filename")
    else:  # some tools leave <filename> out: take the image with the XML's stem
        key = next((prefix + xml_path.stem + ext for ext in IMAGE_EXTENSIONS
                    if (images_root / (prefix + xml_path.stem + ext)).exists()), prefix + xml_path.stem + ".jpg")
    image_path = images_root / key

    try:
        width = int(root.findtext("size/width") or 0)
        height = int(root.findtext("size/height") or 0)
    except ValueError:
        width = height = 0
    if width <= 0 or height <= 0:  # VOC files from some tools say 0: the image header knows
        try:
            width, height = image_size(image_path)
        except ImageError as e:
            raise AnnotationError(f"{name}: size: no valid <width>/<height> and {e}") from e
    problem = size_problem(width, height)
    if problem:
        raise AnnotationError(f"{name}: size: {problem}")

    boxes = []
    for i, obj in enumerate(root.findall("object")):
        where = f"object[{i}]"
        label = (obj.findtext("name") or "").strip()
        if not label:
            report("error", f"{where}.name", "missing or empty <name>", "bad-label")
            continue
        coords = []
        for tag in ("xmin", "ymin", "xmax", "ymax"):
            text = obj.findtext(f"bndbox/{tag}")
            try:
                v = float(text)
                if not (math.isfinite(v) and abs(v) < LIMIT):
                    raise ValueError
            except (TypeError, ValueError):
                coords = None
                report("error", f"{where}.bndbox.{tag}", f"expected a number, got {brief(text)}", "bad-box")
                break
            coords.append(v)
        if coords is None:
            continue
        (xmin, xmax), (ymin, ymax) = sorted(coords[0::2]), sorted(coords[1::2])
        attrs = {}
        for a in obj.findall("attributes/attribute"):
            key_ = (a.findtext("name") or "").strip()
            if key_:
                attrs[key_] = _value((a.findtext("value") or "").strip())
        if (obj.findtext("difficult") or "0").strip() == "1":
            attrs["difficult"] = 1
        box = Box(xmin - 1, ymin - 1, xmax, ymax, label=label, attributes=attrs)
        if coords[0] > coords[2] or coords[1] > coords[3]:
            report("info", f"{where}.bndbox", "min/max swapped (normalized)", "corner-order", fixable=True)
        if not box.is_inside(width, height):
            report("warning", f"{where}.bndbox", f"box extends outside the {width}x{height} image (clipped)",
                   "box-out-of-bounds", fixable=True)
            box = box.clip(width, height)
        boxes.append(box)
    raise_first_error(found, issues)
    return Sample(image_path=image_path, width=width, height=height, boxes=tuple(boxes), image_id=key,
                  annotation_path=xml_path)


def _sub(parent, tag: str, text=None):
    el = ET.SubElement(parent, tag)
    if text is not None:
        el.text = str(text)
    return el


def dumps_voc(sample: Sample) -> str:
    """The VOC XML text of one sample (1-based inclusive integer corners, see the module doc)."""
    root = ET.Element("annotation")
    key = Path(sample.image_id)
    _sub(root, "folder", IMAGES)
    _sub(root, "filename", key.name)
    src = _sub(root, "source")
    _sub(src, "database", "facekit")
    size = _sub(root, "size")
    _sub(size, "width", sample.width)
    _sub(size, "height", sample.height)
    _sub(size, "depth", 3)
    _sub(root, "segmented", 0)
    for b in sample.boxes:
        attrs = dict(b.attributes or {})
        obj = _sub(root, "object")
        _sub(obj, "name", b.label)
        _sub(obj, "pose", "Unspecified")
        _sub(obj, "truncated", 0)
        _sub(obj, "difficult", 1 if attrs.pop("difficult", 0) else 0)
        bb = _sub(obj, "bndbox")
        xmin, ymin = round(b.x_min) + 1, round(b.y_min) + 1  # VOC: 1-based, inclusive
        _sub(bb, "xmin", xmin)
        _sub(bb, "ymin", ymin)
        _sub(bb, "xmax", max(xmin, round(b.x_max)))
        _sub(bb, "ymax", max(ymin, round(b.y_max)))
        if attrs:
            el = _sub(obj, "attributes")
            for k, v in attrs.items():
                a = _sub(el, "attribute")
                _sub(a, "name", k)
                _sub(a, "value", v)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def xml_key(image_id: str) -> str:
    return Path(image_id).with_suffix(".xml").as_posix()


def read(src: Path, *, images: Path | None = None, issues: list[Issue] | None = None) -> list[Sample]:
    """Read a VOC folder: `src/Annotations/**.xml` (or XMLs directly in `src`), images in
    `images` (default `src/JPEGImages`, else `src`). Sub-folders of Annotations carry into keys."""
    src = Path(src)
    if src.is_file():
        raise DatatoolError(f"{src}: VOC is read from a folder (the one holding Annotations/)")
    if not src.is_dir():
        raise DatatoolError(f"{src}: VOC folder not found")
    ann_dir = src / ANNOTATIONS if (src / ANNOTATIONS).is_dir() else src
    if images is None:
        images = src / IMAGES if (src / IMAGES).is_dir() else src
    xmls = sorted(ann_dir.rglob("*.xml"), key=lambda p: p.relative_to(ann_dir).as_posix())
    if not xmls:
        raise DatatoolError(f"{ann_dir}: no VOC .xml files found")
    samples = []
    for xml in xmls:
        rel_dir = xml.parent.relative_to(ann_dir).as_posix()
        samples.append(read_voc_xml(xml, Path(images), key_dir="" if rel_dir == "." else rel_dir, issues=issues))
    return samples


def write(samples: list[Sample], out: Path, *, overwrite: bool = False, copy_images: bool = True,
          progress_bar: bool = False) -> None:
    """Write `out/Annotations/<key>.xml`, `out/JPEGImages/<key>` and `out/ImageSets/Main/default.txt`."""
    from ..core.fsutil import write_text_atomic

    out = Path(out)
    labeled = labeled_with_safe_keys(samples)
    plan = [(s, out / ANNOTATIONS / xml_key(s.image_id), out / IMAGES / s.image_id) for s in labeled]
    check_free([out / IMAGE_SET] + [p for _, x, i in plan for p in ((x, i) if copy_images else (x,))],
               overwrite=overwrite)
    for s, xml, img in progress(plan, desc="write VOC", enabled=progress_bar):
        if copy_images:
            copy_image(s.image_path, img, overwrite=overwrite)
        write_text_atomic(xml, dumps_voc(s), overwrite=overwrite)
    stems = "".join(Path(s.image_id).with_suffix("").as_posix() + "\n" for s in labeled)
    write_text_atomic(out / IMAGE_SET, stems, overwrite=overwrite)
