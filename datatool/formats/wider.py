"""WIDER FACE ground truth (`wider_face_{train,val}_bbx_gt.txt`) and its images tree.

The file is a sequence of records, one per image:

    0--Parade/0_Parade_marchingband_1_465.jpg      <- image path, relative to the images root
    2                                              <- number of faces
    345 211 4 4 2 0 0 0 2 0                        <- x y w h blur expression illumination invalid occlusion pose
    331 126 3 3 0 0 0 1 0 0

Boxes are top-left corner + size in pixels; facekit's continuous convention makes them
`x_min = x, x_max = x + w` (no -1). The six attributes are kept in `Box.attributes` under their
WIDER names (ints) and written back unchanged; a box without them is written with zeros.
WIDER has no image sizes, so reading opens each image's header.

Quirks the reader handles: a 0-face image is followed by one all-zero row (skipped, and written
back the same way); zero-size boxes (w or h = 0) exist and are kept readable here, `convert`'s
filters drop them; some re-distributions have only `x y w h` per row (attributes then absent);
a UTF-8 byte-order mark is dropped; file lines without an event folder (`name.jpg`) are read too.
An image listed twice is reported: with the same faces it is kept once (a warning), with
different faces it is left out (an error), since either list may be the wrong one.

Writing, every file line has an event folder as in WIDER itself (`0--Parade/0_Parade_..._849.jpg`):
a key without one goes under `EVENT` (`good.jpg` -> `0--facekit/good.jpg`), in the gt file and in
the copied images tree alike. Tools that read WIDER (Datumaro's `wider_face`) find file lines by
their `/` and take the folder for the event. A name with a line break cannot be one line of the
file and is refused.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..core.errors import AnnotationError, DatatoolError, ImageError
from ..core.images import image_size, is_image, is_unsupported_image, unsupported_format
from ..core.issues import Issue
from ..core.sample import Box, Sample
from ._io import LIMIT, check_free, copy_image, num, progress, raise_first_error, read_text, safe_key

ATTRIBUTES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
"""WIDER's per-face attributes, in file order: blur 0 clear / 1 normal / 2 heavy; expression
0 typical / 1 exaggerated; illumination 0 normal / 1 extreme; invalid 0 / 1; occlusion 0 none /
1 partial / 2 heavy; pose 0 typical / 1 atypical."""

GT_NAME = "wider_face_bbx_gt.txt"  # what `write` names the gt file in its output folder
IMAGES = "images"
EVENT = "0--facekit"  # the event folder `write` gives keys that have none (WIDER: `<n>--<Event>`)


def _numbers(text: str) -> list[float] | None:
    """The finite numbers on a line, or None if any token is not one."""
    try:
        values = [float(t) for t in text.split()]
    except ValueError:
        return None
    return values if all(math.isfinite(v) and abs(v) < LIMIT for v in values) else None


def read_wider(gt_txt: Path, images_root: Path, *, issues: list[Issue] | None = None,
               progress_bar: bool = False) -> list[Sample]:
    """Read a WIDER FACE gt file into samples whose `image_id` is the file line (`event/name.jpg`).

    `images_root` is the folder the file lines are relative to (e.g. `WIDER_train/images`).
    A malformed file raises `AnnotationError` naming the file and line. Per-image problems (a
    missing image, a negative size, a box outside the image, clipped) are appended to `issues`;
    without an `issues` list the first error raises.
    """
    gt_txt, images_root = Path(gt_txt), Path(images_root)
    lines = read_text(gt_txt, what="WIDER gt file").splitlines()
    if not images_root.is_dir():
        raise DatatoolError(f"{images_root}: WIDER images folder not found")

    name = str(gt_txt)
    found: list[Issue] = []
    records = _drop_repeats(_parse(lines, name), name, found)
    samples: list[Sample] = []
    for lineno, key, rows in progress(records, desc="read WIDER", enabled=progress_bar):
        image_path = images_root / key
        try:
            width, height = image_size(image_path)
        except ImageError as e:
            found.append(Issue("error", name, f"line {lineno}", f"{key}: {e.reason}", e.code))
            continue
        boxes, broken = [], False
        for row_no, values in rows:
            x, y, w, h = values[:4]
            attrs = {a: int(v) for a, v in zip(ATTRIBUTES, values[4:10])}
            if w < 0 or h < 0:
                found.append(Issue("error", name, f"line {row_no}", f"negative box size w={num(w)} h={num(h)}",
                                   "bad-box"))
                broken = True  # the whole image is left out rather than kept with a face missing
                continue
            box = Box.from_xywh(x, y, w, h, attributes=attrs)
            if not box.is_inside(width, height):
                clipped = box.clip(width, height)
                found.append(Issue("warning", name, f"line {row_no}",
                                   f"{key}: box extends outside the {width}x{height} image (clipped)",
                                   "box-out-of-bounds", fixable=True))
                box = clipped
            boxes.append(box)
        if broken:
            continue
        samples.append(Sample(image_path=image_path, width=width, height=height, boxes=tuple(boxes),
                              image_id=key, annotation_path=gt_txt))
    raise_first_error(found, issues)
    return samples


def _drop_repeats(records: list, name: str, found: list[Issue]) -> list:
    """`records` with each image once: a repeat with the same faces is dropped (a warning); an
    image listed with different faces is dropped everywhere (an error at each later listing)."""
    first: dict[str, tuple[int, list]] = {}
    conflicting: set[str] = set()
    kept = []
    for lineno, key, rows in records:
        if key not in first:
            first[key] = (lineno, [values for _, values in rows])
            kept.append((lineno, key, rows))
            continue
        first_line, first_rows = first[key]
        if [values for _, values in rows] == first_rows:
            found.append(Issue("warning", name, f"line {lineno}", f"{key} is listed again with the same faces "
                               f"(first at line {first_line}); kept once", "duplicate-image"))
        else:
            found.append(Issue("error", name, f"line {lineno}", f"{key} is listed again with different faces "
                               f"(first at line {first_line}); each image must be listed once", "duplicate-image"))
            conflicting.add(key)
    return [r for r in kept if r[1] not in conflicting]


def _parse(lines: list[str], name: str) -> list[tuple[int, str, list[tuple[int, list[float]]]]]:
    """`(line number of the file line, key, [(line number, numbers), ...])` per record."""
    records = []
    i, n = 0, len(lines)
    while i < n:
        text = lines[i].strip()
        if not text:  # tolerate blank lines (trailing newline, hand edits)
            i += 1
            continue
        file_line = i + 1
        if not is_image(Path(text)):
            if is_unsupported_image(Path(text)):  # an image, but a GIF or the like
                raise AnnotationError(f"{name}: line {file_line}: {text!r}: {unsupported_format(Path(text))}")
            raise AnnotationError(f"{name}: line {file_line}: expected an image path (event/name.jpg), got {text!r}")
        key = safe_key(text, where=f"{name}: line {file_line}")
        if i + 1 >= n:
            raise AnnotationError(f"{name}: line {file_line + 1}: missing face count after {text!r}")
        count_text = lines[i + 1].strip()
        try:
            count = int(count_text)
        except ValueError:
            raise AnnotationError(
                f"{name}: line {i + 2}: expected the face count (an integer), got {count_text!r}") from None
        if count < 0:
            raise AnnotationError(f"{name}: line {i + 2}: face count must be >= 0, got {count}")
        i += 2
        rows = []
        for _ in range(count):
            if i >= n:
                raise AnnotationError(f"{name}: line {i + 1}: file ends before the {count} faces of {text!r}")
            rows.append((i + 1, _row(lines[i], i + 1, name)))
            i += 1
        # WIDER: a 0-face image still has one all-zero row. Skip it; tolerate files that omit it.
        if count == 0 and i < n:
            values = _numbers(lines[i])
            if values is not None and len(values) >= 4 and not any(values):
                i += 1
        records.append((file_line, key, rows))
    return records


def _row(text: str, lineno: int, name: str) -> list[float]:
    values = _numbers(text)
    if values is None or len(values) not in (4, 10):
        raise AnnotationError(
            f"{name}: line {lineno}: expected 10 numbers 'x y w h blur expression illumination invalid "
            f"occlusion pose' (or 4: 'x y w h'), got {text.strip()!r}")
    return values


def wider_row(box: Box) -> str:
    """One face line: `x y w h` then the six attributes (0 where the box has none)."""
    attrs = box.attributes or {}
    values = [box.x_min, box.y_min, box.width, box.height]
    parts = [num(v) for v in values]
    for a in ATTRIBUTES:
        try:
            parts.append(str(int(attrs.get(a, 0))))
        except (TypeError, ValueError):
            parts.append("0")
    return " ".join(parts)


def dumps_wider(samples: list[Sample]) -> str:
    """The gt text for labeled samples, in the order given (unlabeled ones are left out)."""
    out = []
    for s in samples:
        if not s.labeled:
            continue
        out.append(s.image_id)
        out.append(str(len(s.boxes)))
        if not s.boxes:
            out.append("0 0 0 0 0 0 0 0 0 0")  # WIDER: a 0-face image still has one all-zero row
        out.extend(wider_row(b) for b in s.boxes)
    return "\n".join(out) + "\n" if out else ""


def wider_key(image_id: str, *, where: str) -> str:
    """The file line for `image_id`: a safe relative path with an event folder (`EVENT/` added
    when it has none). `AnnotationError` (naming `where`) for a name with a line break."""
    key = safe_key(image_id, where=where)
    if key.splitlines() != [key]:  # the reader splits the file as str.splitlines does
        raise AnnotationError(f"{where}: {key!r} contains a line break, which cannot be written to a WIDER "
                              "gt file (one image name per line); rename the image")
    return key if "/" in key else f"{EVENT}/{key}"


def write_wider(samples: list[Sample], gt_txt: Path, *, images_root: Path | None = None,
                overwrite: bool = False, progress_bar: bool = False) -> Path:
    """Write the gt file for `samples` (file lines = `wider_key(image_id)`) and, if `images_root`
    is given, copy each image to `images_root/<file line>`. Refuses existing files unless
    `overwrite`, and a name that cannot be a file line, before writing anything."""
    from ..core.fsutil import write_text_atomic

    gt_txt = Path(gt_txt)
    labeled = [s for s in samples if s.labeled]
    labels = sorted({b.label for s in labeled for b in s.boxes})
    if len(labels) > 1:  # WIDER has no label column: every box would silently become a face
        raise DatatoolError(f"WIDER FACE holds one class, but the boxes have labels {', '.join(labels)} "
                            "(convert to coco, voc, yolo or csv to keep them apart)")
    keys = [wider_key(s.image_id, where=f"{s.image_path}: image_id") for s in labeled]
    first: dict[str, Sample] = {}
    for s, k in zip(labeled, keys):  # `a.jpg` and `0--facekit/a.jpg` would both become the second
        if k in first:
            raise DatatoolError(f"{s.image_path}: its WIDER file line {k!r} is also that of "
                                f"{first[k].image_path}; rename one of them")
        first[k] = s
    targets = [Path(images_root) / k for k in keys] if images_root is not None else []
    check_free([gt_txt, *targets], overwrite=overwrite)
    for s, dst in progress(list(zip(labeled, targets)), desc="copy images", enabled=progress_bar):
        copy_image(s.image_path, dst, overwrite=overwrite)
    write_text_atomic(gt_txt, dumps_wider([s.replace(image_id=k) for s, k in zip(labeled, keys)]),
                      overwrite=overwrite)
    return gt_txt


def find_gt(src: Path) -> Path:
    """The gt file: `src` itself, or the single `*_bbx_gt.txt` (or `wider_face_bbx_gt.txt`) in folder `src`."""
    src = Path(src)
    if src.is_file():
        return src
    if src.is_dir():
        found = sorted(src.glob("*bbx_gt.txt"))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise DatatoolError(f"{src}: several WIDER gt files ({', '.join(p.name for p in found)}); pass one")
        raise DatatoolError(f"{src}: no WIDER gt file (*_bbx_gt.txt) in this folder")
    raise DatatoolError(f"{src}: WIDER gt file not found")


def read(src: Path, *, images: Path | None = None, issues: list[Issue] | None = None,
         progress_bar: bool = False) -> list[Sample]:
    """Read WIDER FACE: `src` is the gt txt (or a folder holding it); `images` its images tree
    (default: `images/` beside the gt file, as `write` lays it out)."""
    gt = find_gt(src)
    if images is None:
        images = gt.parent / IMAGES
        if not images.is_dir():
            raise DatatoolError(f"{gt}: pass --images, the WIDER images folder (e.g. WIDER_train/images)")
    return read_wider(gt, images, issues=issues, progress_bar=progress_bar)


def write(samples: list[Sample], out: Path, *, overwrite: bool = False, copy_images: bool = True,
          progress_bar: bool = False) -> None:
    """Write `out/wider_face_bbx_gt.txt` and the images tree `out/images/<event>/<name>`."""
    out = Path(out)
    write_wider(samples, out / GT_NAME, images_root=out / IMAGES if copy_images else None,
                overwrite=overwrite, progress_bar=progress_bar)
