"""A dataset on disk: a root folder with `images/` (images + labelme JSONs, searched
recursively), optionally `people/NAME/*.jpg` (face crops per person) and `dataset.json`.

A bare folder of images and JSONs is accepted too and treated as its own `images/`.
An image's key (`Sample.image_id`) is its path relative to `images/`, POSIX style.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .core.errors import AnnotationError, DatatoolError, ImageError
from .core.images import image_size, is_image
from .core.issues import Issue
from .core.sample import Sample

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


def _hidden(path: Path, base: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(base).parts)


def list_images(root: Path) -> list[Path]:
    """Every image under the dataset's images folder, sorted by key (deterministic)."""
    base = images_dir(root)
    skip = {base / PEOPLE} if base == Path(root) else set()
    out = []
    for p in base.rglob("*"):
        if p.is_file() and is_image(p) and not _hidden(p, base) and not any(s in p.parents for s in skip):
            out.append(p)
    return sorted(out, key=lambda p: p.relative_to(base).as_posix())


def image_key(image_path: Path, root: Path) -> str:
    return Path(image_path).relative_to(images_dir(root)).as_posix()


@dataclass
class Dataset:
    """What `load_dataset` found: samples (labeled and unlabeled) and every issue met on the way."""

    root: Path
    samples: list[Sample] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    orphan_jsons: list[Path] = field(default_factory=list)

    @property
    def labeled(self) -> list[Sample]:
        return [s for s in self.samples if s.labeled]

    @property
    def unlabeled(self) -> list[Sample]:
        return [s for s in self.samples if not s.labeled]


def load_dataset(root: Path, *, read_sizes: bool = True) -> Dataset:
    """Read every image and its labelme JSON under `root`, collecting problems instead of stopping.

    Images without a JSON become unlabeled samples; unreadable JSONs and images are reported
    as errors and skipped. With `read_sizes=False` unlabeled images get size 1x1 (fast listing).
    """
    from .formats.labelme import json_path_for, read_labelme

    root = Path(root)
    base = images_dir(root)
    ds = Dataset(root=root)
    images = list_images(root)
    image_set = {p.with_suffix("") for p in images}
    for img in images:
        key = img.relative_to(base).as_posix()
        jp = json_path_for(img)
        if jp.exists():
            try:
                s = read_labelme(jp, issues=ds.issues, image_id=key)
            except AnnotationError as e:
                ds.issues.append(Issue("error", str(jp), "", str(e).split(": ", 1)[-1], "bad-json"))
                continue
            if s.image_path != img and s.image_path.resolve() != img.resolve():  # equal paths: skip the syscalls
                s = s.replace(image_path=img)
            ds.samples.append(s)
        else:
            try:
                w, h = image_size(img) if read_sizes else (1, 1)
            except ImageError as e:
                ds.issues.append(Issue("error", str(img), "", str(e).split(": ", 1)[-1], "bad-image"))
                continue
            ds.samples.append(Sample(image_path=img, width=w, height=h, image_id=key, labeled=False))
    for jp in sorted(base.rglob("*.json")):
        if jp.with_suffix("") not in image_set and not _hidden(jp, base):
            ds.orphan_jsons.append(jp)
    return ds


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
