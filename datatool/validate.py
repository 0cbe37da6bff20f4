"""Dataset validation: collect every problem with a severity instead of stopping at the first.

`validate(root)` walks a labelme dataset (or, with `format=`, any format that has a reader)
and returns a `Report`: the issues (error / warning / info, each naming a file and a field)
and the counts a user wants to see (images, labeled, negatives, unlabeled, faces, people).

What is checked, and where:
- the labelme JSONs themselves (not JSON, not labelme, bad shapes, corner order, boxes outside
  the image, zero-area boxes) by `formats.labelme.parse_labelme`, run once per JSON against the
  image's *real* size, so bounds are checked against the picture, not against whatever the JSON
  claims;
- every image is decoded in full (a truncated JPEG only fails when its last rows are read) and
  hashed, so duplicates are listed together;
- `imageWidth/imageHeight` against the image as displayed. labelme applies the EXIF orientation
  before showing a photo, so a phone picture stored 4032x3024 with orientation 6 is 3024x4032
  to labelme; a JSON that holds the stored size was written by something that ignored EXIF, and
  its boxes are probably in the unrotated frame - that one is reported, not fixed;
- labels against an allowed set, faces smaller than `min_face` pixels, negatives (a JSON with no
  shapes: the detector needs them) versus unlabeled images (no JSON: left out of splits), JSONs
  whose image is gone;
- the people layout (`people/NAME/*.jpg`): crops per person, imbalance, empty folders, unreadable
  crops, and the same crop filed under two names.

`fix=True` applies only safe fixes to labelme JSONs - reorder rectangle corners, clip shapes to the
image, set `imageWidth/imageHeight` to the displayed size, point `imagePath` at the image beside
the JSON. It never deletes a shape and never touches an image; each changed JSON is first copied
to `NAME.json.bak` (or `.bak1`, `.bak2`, ... if that exists) and then replaced atomically.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from .core.errors import AnnotationError, DatatoolError, ImageError
from .core.fsutil import write_bytes_atomic, write_json_atomic
from .core.images import (is_image, is_unsupported_image, load_rgb, require_strict_decoding, sha256_bytes,
                          transposes, unsupported_format, verify)
from .core.issues import SEVERITIES, Issue
from .core.neardup import DEFAULT_DISTANCE, check_distance, near_duplicate_issues
from .core.quality import QualityThresholds, measure, quality_issues, quality_table
from .core.sample import Sample
from .dataset import FORMATS, PEOPLE, images_dir, list_people, orphan_json_issue, unsupported_image_beside, walk
from .formats import labelme
from .formats._io import size_text

DEFAULT_MIN_FACE = 10.0  # pixels; WIDER FACE's "hard" faces start around this size
DEFAULT_IMBALANCE = 3.0  # largest / smallest number of crops per person before a warning
BACKUP_SUFFIX = ".bak"  # x.json -> x.json.bak (not *.json, so it is never read as an annotation)


@dataclass(frozen=True)
class ImageFacts:
    """What a full decode of one image tells: sizes as displayed and as stored, EXIF orientation, hash."""

    path: Path
    width: int  # as displayed (EXIF orientation applied), the size labelme shows
    height: int
    stored_width: int  # the pixel grid in the file
    stored_height: int
    orientation: int  # EXIF orientation tag, 1 = upright
    sha256: str
    measures: dict | None = field(default=None, compare=False)  # core.quality measures, when asked for


@dataclass
class Report:
    """Everything `validate` found. `issues` are sorted errors first, then warnings, then info."""

    root: Path
    format: str = "labelme"
    issues: list[Issue] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    people: dict[str, int] = field(default_factory=dict)  # person -> readable crops
    fixed: list[str] = field(default_factory=list)  # JSON files `fix=True` changed
    samples: list[Sample] = field(default_factory=list, repr=False)  # for pictures; not serialized

    def count(self, severity: str) -> int:
        return sum(1 for i in self.issues if i.severity == severity)

    @property
    def has_errors(self) -> bool:
        return self.count("error") > 0

    def summary(self) -> str:
        """One line: images, labeled, negatives, unlabeled, faces, people, errors, warnings."""
        c = self.counts
        parts = [f"{c.get('images', 0)} images", f"{c.get('labeled', 0)} labeled",
                 f"{c.get('negatives', 0)} negatives", f"{c.get('unlabeled', 0)} unlabeled",
                 f"{c.get('faces', 0)} faces"]
        if self.people:
            parts.append(f"{len(self.people)} people ({c.get('person_images', 0)} crops)")
        if self.fixed:
            parts.append(f"{len(self.fixed)} file{'s' if len(self.fixed) != 1 else ''} fixed")
        tally = ", ".join(f"{self.count(s)} {s}{'s' if s != 'info' and self.count(s) != 1 else ''}"
                          for s in SEVERITIES)
        return f"{', '.join(parts)} | {tally}"

    def to_dict(self) -> dict:
        return {
            "root": str(self.root),
            "format": self.format,
            "summary": {**self.counts, **{f"{s}s" if s != "info" else s: self.count(s) for s in SEVERITIES}},
            "people": dict(self.people),
            "fixed": list(self.fixed),
            "issues": [i.to_dict() for i in self.issues],
        }


# --------------------------------------------------------------------------- images


def inspect_image(path: Path, *, measured: bool = False) -> ImageFacts:
    """Decode `path` completely and describe it; raises `ImageError` for anything unreadable.

    The file is read once: the header, the full decode and the hash all come from those bytes.
    `measured`: also the image-quality measures and perceptual hash (`core.quality`), from the
    same bytes.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise ImageError(path=path, reason="image not found") from e
    except OSError as e:
        raise ImageError(path=path, reason=f"cannot read ({e.strerror or e})") from e
    f = verify(data, name=str(path))
    measures = measure(data, name=str(path)) if measured else None
    return ImageFacts(path, f.width, f.height, f.stored_width, f.stored_height, f.orientation, sha256_bytes(data),
                      measures)


def _inspect_one(path: Path, measured: bool = False) -> ImageFacts | Issue:
    try:
        return inspect_image(path, measured=measured)
    except ImageError as e:
        return Issue.from_error(e, code="bad-image", file=path)
    except Exception as e:  # a decoder bug must not end the whole run: report the file, go on
        return Issue("error", str(path), "", f"cannot decode ({type(e).__name__}: {e})", "bad-image")


def inspect_images(paths: Sequence[Path], *, workers: int | None = None, progress: bool = False,
                   measure: Iterable[Path] = ()) -> tuple[dict[Path, ImageFacts], list[Issue]]:
    """Decode and hash every image (threads: the decoders release the GIL); facts by path, issues in order.
    Images in `measure` also get the quality measures (`ImageFacts.measures`)."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    require_strict_decoding()
    paths = list(paths)
    workers = max(1, workers or min(4, os.cpu_count() or 1))
    facts: dict[Path, ImageFacts] = {}
    issues: list[Issue] = []
    pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None  # one: no hand-offs between threads
    try:
        measured = set(measure)
        flags = [p in measured for p in paths]
        results = tqdm((pool.map if pool else map)(_inspect_one, paths, flags), total=len(paths),
                       desc="checking images",
                       unit="img", disable=not progress or not paths, leave=False)
        for path, result in zip(paths, results):
            if isinstance(result, Issue):
                issues.append(result)
            else:
                facts[path] = result
    finally:
        if pool is not None:  # on Ctrl-C, drop the queued images instead of decoding them all before exiting
            pool.shutdown(wait=True, cancel_futures=True)
    _remember_hashes(facts.values())
    return facts, issues


def _remember_hashes(facts) -> None:
    """Keep the perceptual hashes just measured (`core.hashcache`): a later `split
    --group-near-duplicates` or `report` over the same images then decodes none of them."""
    from .core.hashcache import HashCache
    from .core.neardup import HASH_VERSION

    hashes = {f.sha256: f.measures["phash"] for f in facts if f.measures}
    if hashes:
        with HashCache(HASH_VERSION) as cache:
            cache.put_many(hashes)


# --------------------------------------------------------------------------- labelme checks


def _backup_path(path: Path) -> Path:
    candidate = path.with_name(path.name + BACKUP_SUFFIX)
    n = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}{BACKUP_SUFFIX}{n}")
        n += 1
    return candidate


def _apply_fix(json_path: Path, new: dict) -> Path:
    """Copy the JSON to a fresh backup, then replace it atomically; the file mode is kept."""
    original = json_path.read_bytes()
    mode = json_path.stat().st_mode & 0o7777
    backup = _backup_path(json_path)
    write_bytes_atomic(backup, original, overwrite=False)
    write_json_atomic(json_path, new)
    for p in (backup, json_path):
        os.chmod(p, mode)
    return backup


def _check_labelme_file(jp: Path, data: dict, image: Path, key: str, facts: ImageFacts | None, *,
                        labels: frozenset[str] | None, min_face: float, fix: bool,
                        report: Report) -> tuple[Sample, bool] | None:
    """All checks of one loaded labelme JSON and its image, appended to `report`; returns the
    sample as checked and whether it is a negative (None if the JSON cannot be parsed).

    The JSON is parsed once, against the image's real size (so bounds are checked against the
    picture); after a fix, against the fixed dict."""
    name = str(jp)
    add = report.issues.append

    exif_frame = False  # JSON holds the stored (unrotated) size of an EXIF-rotated photo
    if facts is not None:
        stated = (data.get("imageWidth"), data.get("imageHeight"))
        if stated != (facts.width, facts.height) and transposes(facts.orientation) \
                and stated == (facts.stored_width, facts.stored_height):
            exif_frame = True
        elif fix:
            new, changes = labelme.safe_fixes(data, jp, image, facts.width, facts.height)
            if changes:
                try:
                    backup = _apply_fix(jp, new)
                except OSError as e:  # read-only folder, disk full: report it and go on checking
                    add(Issue("error", name, "", f"cannot write the fix ({e.strerror or e}); file left as it was",
                              "fix-failed"))
                else:
                    report.fixed.append(name)
                    add(Issue("info", name, "", f"fixed: {'; '.join(changes)} (original kept as {backup.name})",
                              "fixed"))
                    data = new

    stated_w, stated_h = data.get("imageWidth"), data.get("imageHeight")
    if facts is None or exif_frame:
        width, height = stated_w, stated_h
    else:
        width, height = facts.width, facts.height
    if exif_frame:
        add(Issue("error", name, "imageWidth/imageHeight",
                  f"{stated_w}x{stated_h} is the stored pixel size, but EXIF orientation {facts.orientation} "
                  f"displays {image.name} as {facts.width}x{facts.height}, the size labelme shows and expects; "
                  "the boxes are probably in the unrotated frame, so they are not fixed automatically: "
                  "re-draw them in labelme, or save the photo upright without the EXIF tag",
                  "exif-rotated-size"))
    elif facts is not None and (stated_w, stated_h) != (facts.width, facts.height):
        add(Issue("error", name, "imageWidth/imageHeight",
                  f"JSON says {size_text(stated_w, stated_h)} but {image.name} is {facts.width}x{facts.height} "
                  "(labelme refuses to open a file whose sizes disagree)",
                  "size-mismatch", fixable=True))

    if not labelme.points_to(data, jp, image):
        stated = data.get("imagePath")
        add(Issue("warning", name, "imagePath",
                  (f"{stated!r} does not lead" if stated else "missing; it should lead") + f" to {image.name} "
                  "beside the JSON (labelme resolves imagePath from the JSON's folder)",
                  "image-path-mismatch", fixable=True))

    sized = {**data, "imageWidth": width, "imageHeight": height}
    parse_issues: list[Issue] = []
    shape_of: list[int] = []
    try:
        checked = labelme.parse_labelme(sized, jp, issues=parse_issues, image_id=key, image_path=image,
                                        shape_index=shape_of)
    except AnnotationError as e:
        add(Issue.from_error(e, code="bad-json"))
        return None
    report.issues.extend(i for i in parse_issues if i.field != "imagePath")  # checked above, image-aware

    for k, box in zip(shape_of, checked.boxes):
        if labels is not None and box.label not in labels:
            add(Issue("error", name, f"shapes[{k}].label",
                      f"label {box.label!r} is not one of the allowed labels ({', '.join(sorted(labels))})",
                      "label-not-allowed"))
        if min_face and min(box.width, box.height) < min_face:
            add(Issue("warning", name, f"shapes[{k}].points",
                      f"{box.label} is {box.width:g}x{box.height:g} px, smaller than --min-face {min_face:g}",
                      "tiny-face"))
    if not data["shapes"]:
        add(Issue("info", name, "shapes", "negative: labeled with no face", "negative"))
    # a negative is a JSON with no shapes, not one whose every shape was rejected
    return checked, not data["shapes"]


def _check_orphan_json(jp: Path, report: Report) -> None:
    """A JSON with no same-stem image beside it."""
    name = str(jp)
    if unsupported_image_beside(jp) is not None:  # x.gif beside x.json: say why it is not read
        report.issues.append(orphan_json_issue(jp))
        return
    try:
        data = labelme.load_json(jp)
    except AnnotationError as e:
        if e.code == "not-labelme":
            report.issues.append(Issue("info", name, "", "not a labelme file and has no image beside it (ignored)",
                                       "orphan-json"))
        else:
            report.issues.append(Issue.from_error(e, severity="warning", suffix="; no image beside it (ignored)",
                                                  code="orphan-json"))
        return
    field_ = data.get("imagePath")
    target = labelme.image_path_target(jp, field_)
    if target is not None and target.is_file() and is_unsupported_image(target):
        report.issues.append(Issue("error", name, "imagePath", f"its image {field_!r} is not read: "
                                   f"{unsupported_format(target)}", "unsupported-image"))
    elif target is not None and target.is_file():
        report.issues.append(Issue(
            "warning", name, "imagePath",
            f"no image named {jp.stem}.* beside it; its imagePath {field_!r} exists, but annotations are "
            f"paired by name, so this JSON is ignored (rename it {target.stem}.json?)", "orphan-json"))
    else:
        embedded = " (labelme can still show the copy embedded in imageData; save it as an image beside " \
            "the JSON to use it here)" if data.get("imageData") else ""
        report.issues.append(Issue("error", name, "imagePath",
                                   f"image missing: {field_!r} not found and no {jp.stem}.* beside the JSON"
                                   f"{embedded}", "image-missing"))


def _rel(path: Path, root: Path) -> str:
    """`path` as the user would find it from the dataset root (absolute if outside it)."""
    rel = os.path.relpath(path, root)
    return str(path) if rel.startswith("..") else rel


def _check_duplicates(facts: Iterable[ImageFacts], report: Report, *, person_of: dict[Path, str]) -> None:
    by_hash: dict[str, list[Path]] = {}
    for f in facts:
        by_hash.setdefault(f.sha256, []).append(f.path)
    dup_images = 0
    for digest, paths in by_hash.items():
        if len(paths) < 2:
            continue
        dup_images += len(paths) - 1
        names = sorted({person_of[p] for p in paths if p in person_of})
        base = report.root if report.root.is_dir() else report.root.parent
        others = ", ".join(_rel(p, base) for p in paths[1:])
        if len(names) > 1:
            report.issues.append(Issue(
                "error", str(paths[0]), "",
                f"the same crop is filed under {len(names)} people ({', '.join(names)}): {others} "
                f"(sha256 {digest[:12]})", "duplicate-across-people"))
        else:
            report.issues.append(Issue("warning", str(paths[0]), "",
                                       f"{len(paths)} identical images: also {others} (sha256 {digest[:12]})",
                                       "duplicate-image"))
    report.counts["duplicates"] = dup_images


def _check_health(facts: dict[Path, ImageFacts], report: Report, *, distance: int | None,
                  quality: QualityThresholds | None) -> None:
    """Image-quality warnings and near-duplicate clusters (`core.quality`, `core.neardup`) for the
    images whose facts carry measures."""
    measured = {p: f.measures for p, f in facts.items() if f.measures is not None}
    if not measured:
        return
    table = quality_table(measured)
    if quality is not None:
        report.issues.extend(quality_issues(table, quality))
    if distance is not None:
        base = report.root if report.root.is_dir() else report.root.parent
        # byte-identical copies are already one duplicate-image issue: only the first takes part
        first_of: dict[str, str] = {}
        for p in measured:
            first_of.setdefault(facts[p].sha256, str(p))
        keep = set(first_of.values())
        hashes = {f: h for f, h in zip(table.index, table["phash"]) if f in keep}
        clusters = near_duplicate_issues(hashes, distance,
                                         relative_to=images_dir(base) if report.format == "labelme" else base)
        report.issues.extend(clusters)
        report.counts["near_duplicate_clusters"] = len(clusters)


def _check_people(root: Path, people: dict[str, list[Path]], facts: dict[Path, ImageFacts],
                  report: Report, *, imbalance: float) -> None:
    base = Path(root) / PEOPLE
    for stray in sorted(p for p in base.iterdir() if p.is_file() and is_image(p)):
        report.issues.append(Issue("warning", str(stray), "", "image directly in people/ is ignored: "
                                   "put each crop in people/NAME/", "person-folder"))
    for person, paths in people.items():
        report.people[person] = sum(1 for p in paths if p in facts)
        if not paths:
            report.issues.append(Issue("warning", str(base / person), "", "no images for this person",
                                       "empty-person"))
    report.counts["person_images"] = sum(report.people.values())
    counts = {p: n for p, n in report.people.items() if n > 0}
    if len(counts) == 1:
        report.issues.append(Issue("warning", str(base), "",
                                   f"only one person ({next(iter(counts))}): a recognizer needs two or more",
                                   "one-person"))
    if len(counts) >= 2:
        most, least = max(counts, key=counts.get), min(counts, key=counts.get)
        ratio = counts[most] / counts[least]
        if imbalance and ratio > imbalance:
            report.issues.append(Issue(
                "warning", str(base), "",
                f"imbalanced: {most} has {counts[most]} crops, {least} only {counts[least]} "
                f"(ratio {ratio:.1f} > {imbalance:g}); capture more of {least} or augment it", "imbalance"))


def _validate_labelme(root: Path, report: Report, *, labels, min_face, fix, imbalance, workers, progress,
                      distance, quality) -> None:
    listing = walk(root)
    images = listing.image_paths
    people = list_people(root)
    person_of = {p: name for name, paths in people.items() for p in paths}
    # people/ crops of one person look alike by design: only the dataset's images are measured
    facts, image_issues = inspect_images(images + list(person_of), workers=workers, progress=progress,
                                         measure=images if (distance is not None or quality is not None) else ())
    report.issues.extend(image_issues)

    claimed: dict[Path, list[tuple[Path, str]]] = {}  # JSON -> the images paired with it (a.jpg, a.png)
    unlabeled = []
    for img, key, jp in listing.images:
        if jp is None:
            unlabeled.append(img)
        else:
            claimed.setdefault(jp, []).append((img, key))
    faces = negatives = labeled = 0
    for jp, claims in claimed.items():
        try:
            data = labelme.load_json(jp)
        except AnnotationError as e:
            report.issues.append(Issue.from_error(e, code="bad-json"))
            continue
        img, key = claims[0]
        if len(claims) > 1:
            img, key = next((c for c in claims if labelme.points_to(data, jp, c[0])), claims[0])
            report.issues.append(Issue(
                "warning", str(jp), "", f"claimed by {len(claims)} images with the same name "
                f"({', '.join(c[0].name for c in claims)}); checked against {img.name}; "
                "rename the others", "ambiguous-json"))
        checked = _check_labelme_file(jp, data, img, key, facts.get(img), labels=labels, min_face=min_face,
                                      fix=fix, report=report)
        if checked is not None:
            report.samples.append(checked[0])
            labeled += 1
            faces += len(checked[0].boxes)
            negatives += checked[1]
    for img in unlabeled:
        report.issues.append(Issue("info", str(img), "", "unlabeled: no labelme JSON beside it "
                                   "(left out of splits; `datatool label` opens it)", "unlabeled"))
    for jp in listing.orphan_jsons:
        _check_orphan_json(jp, report)
    _check_duplicates(facts.values(), report, person_of=person_of)
    _check_health(facts, report, distance=distance, quality=quality)
    if people:
        _check_people(root, people, facts, report, imbalance=imbalance)

    report.counts.update(images=len(images), labeled=labeled, negatives=negatives,
                         unlabeled=len(unlabeled), faces=faces, unreadable_images=len(image_issues),
                         orphan_jsons=len(listing.orphan_jsons))


# --------------------------------------------------------------------------- other formats


def _reader(fmt: str):
    module = FORMATS.get(fmt)
    if module is None:
        raise DatatoolError(f"--format {fmt}: no reader for this format (available: {', '.join(sorted(FORMATS))})")
    return module.read


def _validate_samples(src: Path, report: Report, *, fmt, images, labels, min_face, workers, progress,
                      distance, quality) -> None:
    """The image and box checks for a dataset in another format, read through its module's `read`."""
    read = _reader(fmt)
    read_issues: list[Issue] = []
    try:
        samples = read(Path(src), images=Path(images) if images else None, issues=read_issues)
    except DatatoolError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatatoolError(f"{src}: cannot read as {fmt} ({type(e).__name__}: {e})") from e
    report.issues.extend(read_issues)
    paths = list(dict.fromkeys(Path(s.image_path) for s in samples))
    facts, image_issues = inspect_images(paths, workers=workers, progress=progress,
                                         measure=paths if (distance is not None or quality is not None) else ())
    report.issues.extend(image_issues)
    faces = negatives = 0
    for s in samples:
        name = str(s.annotation_path or src)
        where = s.image_id
        f = facts.get(Path(s.image_path))
        width, height = s.width, s.height
        if f is not None and (s.width, s.height) != (f.width, f.height):
            add_exif = (f" (EXIF orientation {f.orientation}: stored {f.stored_width}x{f.stored_height})"
                        if transposes(f.orientation) else "")
            report.issues.append(Issue("error", name, f"{where} size",
                                       f"annotation says {s.width}x{s.height} but the image is "
                                       f"{f.width}x{f.height} as displayed{add_exif}", "size-mismatch"))
            width, height = f.width, f.height
        for j, box in enumerate(s.boxes):
            field_ = f"{where} boxes[{j}]"
            if not box.is_inside(width, height):
                report.issues.append(Issue("warning", name, field_, f"box {list(box.xyxy)} extends outside the "
                                           f"{width}x{height} image", "box-out-of-bounds"))
            if box.width <= 0 or box.height <= 0:
                report.issues.append(Issue("error", name, field_, f"zero-area box {list(box.xyxy)}", "zero-area-box"))
            elif min_face and min(box.width, box.height) < min_face:
                report.issues.append(Issue("warning", name, field_, f"{box.label} is {box.width:g}x{box.height:g} "
                                           f"px, smaller than --min-face {min_face:g}", "tiny-face"))
            if labels is not None and box.label not in labels:
                report.issues.append(Issue("error", name, field_, f"label {box.label!r} is not one of the allowed "
                                           f"labels ({', '.join(sorted(labels))})", "label-not-allowed"))
        faces += len(s.boxes)
        negatives += s.is_negative
        if not s.labeled:
            report.issues.append(Issue("info", str(s.image_path), "", "unlabeled: no annotation (left out of "
                                       "splits)", "unlabeled"))
        elif s.is_negative:
            report.issues.append(Issue("info", name, where, "negative: labeled with no face", "negative"))
    _check_duplicates(facts.values(), report, person_of={})
    _check_health(facts, report, distance=distance, quality=quality)
    report.samples = list(samples)
    report.counts.update(images=len(paths), labeled=sum(s.labeled for s in samples), negatives=negatives,
                         unlabeled=sum(not s.labeled for s in samples), faces=faces,
                         unreadable_images=len(image_issues))


# --------------------------------------------------------------------------- entry point


def validate(root: Path, *, format: str = "labelme", images: Path | None = None,
             labels: Iterable[str] | None = None, min_face: float = DEFAULT_MIN_FACE, fix: bool = False,
             imbalance: float = DEFAULT_IMBALANCE, workers: int | None = None, progress: bool = False,
             near_dup_distance: int | None = DEFAULT_DISTANCE,
             quality: QualityThresholds | None = QualityThresholds()) -> Report:
    """Check a dataset and return every issue found (never stops at the first).

    `root` is a dataset folder (labelme JSONs beside images, optional `people/NAME/`), or for another
    `format` whatever its reader takes (a WIDER gt txt with `images` its tree, a COCO JSON, ...).
    `labels`: the allowed box labels (None = any). `min_face`: faces narrower or shorter than this many
    pixels are warned about (0 = off). `fix`: apply the safe fixes described in the module docstring
    (labelme only). `imbalance`: warn when the largest person has more than this many times the crops
    of the smallest. `near_dup_distance`: images whose perceptual hashes differ in at most this many
    bits are reported as near-duplicate clusters (None = off); `quality`: the image-quality warning
    thresholds (None = off).
    """
    root = Path(root)
    if near_dup_distance is not None:
        check_distance(near_dup_distance)
    allowed = frozenset(l.strip() for l in labels if l.strip()) if labels is not None else None
    report = Report(root=root, format=format)
    if format == "labelme":
        if images is not None:
            raise DatatoolError("--images is for other formats (e.g. the WIDER images tree); a labelme dataset "
                                "keeps its images beside the JSONs")
        _validate_labelme(root, report, labels=allowed, min_face=min_face, fix=fix, imbalance=imbalance,
                          workers=workers, progress=progress, distance=near_dup_distance, quality=quality)
    else:
        if fix:
            raise DatatoolError(f"--fix edits labelme JSONs only; convert the {format} dataset first "
                                f"(datatool convert {root} --from {format} --to labelme --out DIR)")
        if not root.exists():
            raise DatatoolError(f"{root}: not found")
        _validate_samples(root, report, fmt=format, images=images, labels=allowed, min_face=min_face,
                          workers=workers, progress=progress, distance=near_dup_distance, quality=quality)
    where = str(images_dir(root)) if format == "labelme" else str(root)
    if not report.counts.get("images") and not report.people:
        report.issues.append(Issue("error", where, "", "no images found", "empty"))
    elif report.counts.get("labeled") and not report.counts.get("negatives"):
        report.issues.append(Issue("warning", where, "", "no negatives (images labeled with no face): the "
                                   "detector learns 'no face here' from them", "no-negatives"))
    rank = {s: k for k, s in enumerate(SEVERITIES)}
    report.issues.sort(key=lambda i: rank[i.severity])  # stable: file order kept within a severity
    return report


# --------------------------------------------------------------------------- picture


def problem_sheet(report: Report, path: Path, *, limit: int = 36, cell: int = 256) -> int:
    """Draw the images that have errors or warnings (errors first) with their boxes and first issue
    on one contact sheet at `path`; returns how many were drawn (nothing is written when none)."""
    from .core.draw import contact_sheet, draw_boxes, save_rgb

    by_file: dict[str, Sample] = {}
    for s in report.samples:
        by_file[str(s.image_path)] = s
        if s.annotation_path is not None:
            by_file.setdefault(str(s.annotation_path), s)
    picked: dict[Path, tuple[Sample, Issue]] = {}
    for issue in report.issues:
        s = by_file.get(issue.file)
        if issue.severity != "info" and s is not None and s.image_path not in picked:
            picked[s.image_path] = (s, issue)
        if len(picked) >= limit:
            break
    import cv2

    tiles, titles = [], []
    for s, issue in picked.values():
        try:
            rgb = load_rgb(s.image_path)
        except ImageError:
            continue
        # draw at the size the tile is shown, so small images get readable boxes and captions
        k = cell / max(rgb.shape[:2])
        rgb = cv2.resize(rgb, (max(1, round(rgb.shape[1] * k)), max(1, round(rgb.shape[0] * k))),
                         interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_NEAREST)
        boxes = [b.scale(k, k) for b in s.boxes]
        color = (255, 48, 48) if issue.severity == "error" else (255, 170, 0)
        tiles.append(draw_boxes(rgb, boxes, captions=[b.label for b in boxes], color=color))
        titles.append(f"{issue.severity[0].upper()} {issue.code} {s.image_path.name}")
    if tiles:
        save_rgb(path, contact_sheet(tiles, titles=titles, cell=cell))
    return len(tiles)
