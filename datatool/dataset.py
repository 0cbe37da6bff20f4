"""A dataset on disk: a root folder with `images/` (images + labelme JSONs, searched
recursively), optionally `people/NAME/*.jpg` (face crops per person) and `dataset.json`.

A bare folder of images and JSONs is accepted too and treated as its own `images/`.
An image's key (`Sample.image_id`) is its path relative to `images/`, POSIX style.

This module is the one place that walks dataset folders (`walk`) and pairs images with their
labelme JSONs; `formats.labelme` reads one file at a time. The folder-level labelme `read` /
`write` live here for that reason, and so does `FORMATS`, the registry of every format.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .core.errors import AnnotationError, DatatoolError, ImageError
from .core.fsutil import RECORD_NAME
from .core.images import IMAGE_EXTENSIONS, image_size, is_image, is_unsupported_image, unsupported_format
from .core.issues import Issue, has_errors
from .core.sample import Sample
from .formats import coco, csv, voc, wider, yolo
from .formats._io import check_free, copy_image, progress, raise_first_error, safe_key
from .formats.labelme import json_path_for, read_labelme, write_labelme

IMAGES = "images"
PEOPLE = "people"


def images_dir(root: Path) -> Path:
    """The folder holding images: `root/images` if present, else `root` itself."""
    root = Path(root)
    if not root.exists():
        raise DatatoolError(f"{root}: dataset folder not found")
    if not root.is_dir():
        raise DatatoolError(f"{root}: not a folder (a dataset is a folder with images/ inside)")
    sub = root / IMAGES
    return sub if sub.is_dir() else root


@dataclass(frozen=True)
class Listing:
    """One walk over a dataset's images folder: what is there, paired by name."""

    base: Path  # the images folder
    images: list[tuple[Path, str, Path | None]]  # (image, key, its labelme JSON or None), sorted by key
    orphan_jsons: list[Path]  # JSONs with no same-stem image beside them, sorted

    @property
    def image_paths(self) -> list[Path]:
        return [img for img, _, _ in self.images]


def walk(root: Path) -> Listing:
    """Walk the images folder of `root` once: every image (with its same-stem JSON, if any) and
    every JSON without an image. Hidden files and folders (`.x`) are skipped, and so are
    `people/` and the dataset's own `dataset.json` when `root` is a bare folder of images.
    Symlinked folders are not followed. Sorted by key, so every listing is deterministic.

    `os.scandir` rather than `Path.rglob`: its entries know their type without a `stat` per
    file, and images and JSONs are paired from the one listing instead of an `exists()` each."""
    root = Path(root)
    base = images_dir(root)
    bare = base == root
    images: list[tuple[str, Path, str]] = []  # (key, folder, file name)
    jsons: dict[str, tuple[Path, str]] = {}  # key without suffix -> (folder, file name)

    def scan(folder: Path, prefix: str) -> None:
        with os.scandir(folder) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    if not (bare and not prefix and name == PEOPLE):
                        scan(folder / name, f"{prefix}{name}/")
                    continue
                stem, ext = os.path.splitext(name)
                if ext == ".json":  # exactly: an image's JSON is `with_suffix(".json")`
                    if not (bare and not prefix and name == RECORD_NAME) and entry.is_file():
                        jsons[f"{prefix}{stem}"] = (folder, name)
                elif ext.lower() in IMAGE_EXTENSIONS and entry.is_file():
                    images.append((f"{prefix}{name}", folder, name))

    scan(base, "")
    images.sort(key=lambda item: item[0])
    paired: set[str] = set()
    out = []
    for key, folder, name in images:
        stem = key[:len(key) - len(os.path.splitext(name)[1])]
        jp = None
        if stem in jsons:
            paired.add(stem)
            jp = folder / jsons[stem][1]
        out.append((folder / name, key, jp))
    orphans = sorted(folder / name for stem, (folder, name) in jsons.items() if stem not in paired)
    return Listing(base=base, images=out, orphan_jsons=orphans)


def unsupported_image_beside(json_path: Path) -> Path | None:
    """For a JSON with no image beside it: a same-stem file beside it in an image format facekit
    does not read (`x.gif` beside `x.json`), else None. Such a JSON labels an image that would be
    left out, which is an error to report as such, not a JSON that lost its image."""
    jp = Path(json_path)
    try:
        with os.scandir(jp.parent) as entries:
            found = sorted(e.name for e in entries if e.name != jp.name and e.is_file()
                           and os.path.splitext(e.name)[0] == jp.stem and is_unsupported_image(Path(e.name)))
    except OSError:
        return None
    return jp.parent / found[0] if found else None


def orphan_json_issue(json_path: Path) -> Issue:
    """The issue for a JSON without a (supported) image beside it: an error naming the format when
    its image is there in one facekit does not read, else a warning that it is ignored."""
    other = unsupported_image_beside(json_path)
    if other is not None:
        return Issue("error", str(json_path), "imagePath", f"its image {other.name} is not read: "
                     f"{unsupported_format(other)}", "unsupported-image")
    return Issue("warning", str(json_path), "imagePath", "labelme JSON without an image beside it (ignored)",
                 "orphan-json")


def list_images(root: Path) -> list[Path]:
    """Every image under the dataset's images folder, sorted by key (deterministic)."""
    return walk(root).image_paths


def image_key(image_path: Path, root: Path) -> str:
    return Path(image_path).relative_to(images_dir(root)).as_posix()


@dataclass
class Dataset:
    """What `load_dataset` found: samples (labeled and unlabeled), every issue met on the way,
    and the annotated images left out because their JSON has an error (`rejected`)."""

    root: Path
    samples: list[Sample] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    orphan_jsons: list[Path] = field(default_factory=list)
    rejected: list[Path] = field(default_factory=list)  # labelme JSONs with an error: not samples, sorted by key

    @property
    def rejected_issues(self) -> list[Issue]:
        """The errors that made `rejected` (every error of those JSONs, in file order)."""
        files = {str(p) for p in self.rejected}
        return [i for i in self.issues if i.severity == "error" and i.file in files]

    @property
    def labeled(self) -> list[Sample]:
        return [s for s in self.samples if s.labeled]

    @property
    def unlabeled(self) -> list[Sample]:
        return [s for s in self.samples if not s.labeled]


def load_dataset(root: Path, *, read_sizes: bool = True) -> Dataset:
    """Read every image and its labelme JSON under `root`, collecting problems instead of stopping.

    Images without a JSON become unlabeled samples. This is the one place that decides what an
    annotated image is: a JSON that cannot be read, or that has any error-level issue (a broken
    shape, a bad size, ...), makes its image *rejected* - reported in `issues`, listed in
    `rejected`, and not a sample. It never becomes a sample with the remaining boxes, which for a
    face whose only shape is broken would be a negative ("no face here"). Stages stop on rejected
    images unless asked to skip them (`refuse_rejected`). Unreadable unlabeled images are
    reported and skipped. With `read_sizes=False` unlabeled images get size 1x1 (fast listing).
    """
    root = Path(root)
    listing = walk(root)
    ds = Dataset(root=root, orphan_jsons=list(listing.orphan_jsons))
    for img, key, jp in listing.images:
        if jp is not None:
            found: list[Issue] = []
            try:
                sample = read_labelme(jp, issues=found, image_id=key, image_path=img)
            except AnnotationError as e:
                found.append(Issue.from_error(e, code="bad-json"))
                sample = None
            ds.issues.extend(found)
            if sample is None or has_errors(found):
                ds.rejected.append(jp)
            else:
                ds.samples.append(sample)
            continue
        try:
            w, h = image_size(img) if read_sizes else (1, 1)
        except ImageError as e:
            ds.issues.append(Issue.from_error(e, code="bad-image"))
            continue
        ds.samples.append(Sample(image_path=img, width=w, height=h, image_id=key, labeled=False))
    return ds


class RejectedImages(DatatoolError):
    """Annotated images whose labelme JSON has errors; `issues` holds every one of those errors."""

    code = "rejected"

    def __init__(self, message: str, issues: list[Issue]):
        super().__init__(message)
        self.issues = issues


def refuse_rejected(ds: Dataset, *, skip_errors: bool) -> list[Path]:
    """The rejected JSONs of `ds` (see `load_dataset`), when `skip_errors`; otherwise, if there is
    any, `RejectedImages` naming each file and its first error. Stages call this before writing
    anything, so an error stops them with nothing written."""
    if skip_errors or not ds.rejected:
        return list(ds.rejected)
    first: dict[str, Issue] = {}
    extra: dict[str, int] = {}
    for issue in ds.rejected_issues:
        if issue.file in first:
            extra[issue.file] = extra.get(issue.file, 0) + 1
        else:
            first[issue.file] = issue

    def line(issue: Issue) -> str:
        more = extra.get(issue.file, 0)
        return ": ".join(p for p in (issue.file, issue.field, issue.message) if p) + \
            (f" (and {more} more error{'s' if more > 1 else ''})" if more else "")

    issues = list(first.values())
    if len(issues) == 1:
        message = (f"{line(issues[0])}; the annotated image cannot be used: fix it (`datatool validate` lists "
                   "every problem) or pass --skip-errors to leave it out")
    else:
        shown = "".join(f"\n  {line(i)}" for i in issues[:REJECTED_SHOWN])
        if len(issues) > REJECTED_SHOWN:
            shown += f"\n  ... and {len(issues) - REJECTED_SHOWN} more (`datatool validate` lists them all)"
        message = (f"{len(issues)} annotated images have errors in their labelme JSON and cannot be used: fix "
                   f"them (`datatool validate` lists every problem) or pass --skip-errors to leave them out:{shown}")
    raise RejectedImages(message, ds.rejected_issues)


REJECTED_SHOWN = 10  # files listed in a `RejectedImages` message


def list_people(root: Path) -> dict[str, list[Path]]:
    """`people/NAME/*` face crops per person, sorted; {} when the dataset has none."""
    base = Path(root) / PEOPLE
    if not base.is_dir():
        return {}
    people = {}
    for d in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        imgs = sorted(p for p in d.rglob("*") if p.is_file() and is_image(p))
        people[d.name] = imgs
    return people


# --- a labelme folder as a format (the dataset-level `read` / `write` every format offers) ----

def read_labelme_folder(src: Path, *, images: Path | None = None, issues: list[Issue] | None = None,
                        ) -> list[Sample]:
    """Every image of a labelme folder (dataset root or bare folder) with its JSON beside it.

    Unlabeled images (no JSON) come back with `labeled=False`; JSONs without an image are
    reported as warnings. `images`, if given, is read instead of `src` (same layout rules).
    """
    ds = load_dataset(Path(images) if images is not None else Path(src))
    found = list(ds.issues)
    found.extend(orphan_json_issue(jp) for jp in ds.orphan_jsons)
    raise_first_error(found, issues)
    return ds.samples


def write_labelme_folder(samples: list[Sample], out: Path, *, overwrite: bool = False, copy_images: bool = True,
                         progress_bar: bool = False) -> None:
    """Write a labelme folder: each image to `out/images/<image_id>` with its JSON beside it.

    Unlabeled samples get their image only (they stay unlabeled). With `copy_images=False` only
    the JSONs are written, for images already at those places. Refuses existing files unless
    `overwrite`, checking every destination before writing anything.
    """
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
            write_labelme(s.replace(image_path=dst, annotation_path=jp), jp, overwrite=overwrite)


@dataclass(frozen=True)
class FolderFormat:
    """A format read and written through dataset folders (labelme), shaped like a format module."""

    read: Callable[..., list[Sample]]
    write: Callable[..., None]


LABELME = FolderFormat(read=read_labelme_folder, write=write_labelme_folder)

# The names the CLI accepts (`--from`, `--to`, `validate --format`). Each entry offers
# `read(src, *, images=None, issues=None) -> list[Sample]` and
# `write(samples, out, *, overwrite=False, copy_images=True)`.
FORMATS = {
    "labelme": LABELME,
    "wider": wider,
    "coco": coco,
    "voc": voc,
    "yolo": yolo,
    "csv": csv,
}
