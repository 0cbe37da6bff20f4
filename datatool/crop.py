"""Face crops per person from a boxed (labelme) dataset: the recognition data behind `datatool crop`.

Every usable box of DATASET becomes `DST/people/NAME/<image key stem>_<box index>.jpg`
(a key in a subfolder, `a/b.jpg`, gives `a__b_0.jpg`; the box index counts the image's boxes
in file order). Who NAME is:

- `person="alice"`: the dataset shows one person. A box labelled `alice` is taken; when an
  image has none, its boxes with a generic label (`face`, `head`, ...) are, but only if there
  is exactly one: with two generic faces in a photo nobody can say which one is alice, so the
  image is skipped and counted (as `capture --crop-faces` skips frames with several faces).
  Boxes labelled with another name are someone else and are skipped.
- `label_as_person=True`: each box's label is the name. Generic labels are not names and are
  skipped (and the run fails if nothing else is left, saying how to label names in labelme);
  `allow_labels=("unknown",)` accepts such a label as a person's name when that is meant.

The crop is square, so a face keeps its proportions whatever the box's shape and every crop
resizes to `size` x `size` without stretching: the side is the box's longer side grown by
`margin` x that side on each edge, centred on the box. Near a border the square is *shifted*
to stay inside the image (no padding: black bars would be a feature the model learns), and
only shrunk when the image itself is smaller. `capture --crop-faces` cuts the same way.

Boxes smaller than `min_face` pixels (the shorter side) are skipped and counted: blown up to
160 px they teach blur, not faces. Negatives (a JSON with no shapes) and unlabeled images
have no face to crop; they are counted, never an error.

Leakage: a crop records where it came from in the JPEG itself, as the `facekit:{json}`
comment `datatool capture` stamps (`capture_info` reads it): `group` is the source sample's
group, or the sha256 of the source image's bytes, so `split --task identity` keeps every
crop of one photo (and every augmented variant of its original) in the same split;
`session` is carried over when the source has one (`--group-by session`). `DST/crops.csv`
lists every crop with its source, box and square, and `DST/dataset.json` records the run.

Nothing is overwritten without `overwrite`; each crop is written under a temporary name and
renamed, so Ctrl-C leaves only whole crops (the result says `interrupted`).
"""

from __future__ import annotations

import csv
import io
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .core.errors import DatatoolError, ImageError
from .core.issues import Issue
from .core.faces import DEFAULT_MARGIN, DEFAULT_SIZE, cut_face, is_generic, person_name_problem
from .core.sample import Box, Sample

DEFAULT_MIN_FACE = 20.0
MANIFEST = "crops.csv"
MANIFEST_FIELDS = ("output", "person", "source", "box_index", "label", "x_min", "y_min", "x_max", "y_max",
                   "square_x_min", "square_y_min", "square_x_max", "square_y_max", "group")

# Why a box or an image gave no crop: counted in `CropResult.skipped`.
SKIP_REASONS = {
    "negative": "negative images (no face)",
    "unlabeled": "unlabeled images (no JSON)",
    "tiny": "faces smaller than --min-face",
    "generic-label": "boxes labelled with no name (e.g. 'face')",
    "several-faces": "faces in images with several unnamed faces",
    "other-person": "boxes labelled with another person's name",
    "bad-name": "labels not usable as a folder name",
    "bad-image": "images that could not be read or disagree with their JSON",
}



@dataclass(frozen=True)
class CropJob:
    """One planned crop: box `index` of `sample` goes to `people/<person>/<name>`."""

    sample: Sample
    index: int
    box: Box
    person: str
    name: str


@dataclass
class CropResult:
    """What `crop_dataset` did: crops per person, what was skipped and why, every issue met."""

    out: Path
    per_person: Counter = field(default_factory=Counter)
    sources_per_person: dict = field(default_factory=dict)  # person -> number of source images
    written: list[Path] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    issues: list[Issue] = field(default_factory=list)
    interrupted: bool = False
    rejected: list[Path] = field(default_factory=list)  # labelme JSONs with errors, left out (skip_errors)

    @property
    def total(self) -> int:
        return sum(self.per_person.values())


def output_stem(image_id: str) -> str:
    """`a/b.jpg` -> `a__b`: the image key's stem, flattened so `people/NAME/` stays one folder."""
    return Path(image_id).with_suffix("").as_posix().replace("/", "__")


def plan_crops(samples, *, person: str | None = None, label_as_person: bool = False, allow_labels=(),
               min_face: float = DEFAULT_MIN_FACE, skipped: Counter | None = None,
               issues: list[Issue] | None = None) -> list[CropJob]:
    """Decide which box of which sample becomes which crop (reads no pixels).

    Counts every box or image left out in `skipped` (see `SKIP_REASONS`) and reports named
    problems (unusable names, ambiguous images) in `issues`.
    """
    skipped = skipped if skipped is not None else Counter()
    issues = issues if issues is not None else []
    jobs: list[CropJob] = []
    used: set[tuple[str, str]] = set()
    for s in samples:
        if not s.labeled:
            skipped["unlabeled"] += 1
            continue
        if not s.boxes:
            skipped["negative"] += 1
            continue
        where = str(s.annotation_path or s.image_path)
        chosen: list[tuple[int, Box, str]] = []
        if label_as_person:
            for i, b in enumerate(s.boxes):
                if is_generic(b.label, allow_labels=allow_labels):
                    skipped["generic-label"] += 1
                    continue
                why = person_name_problem(b.label)
                if why:
                    skipped["bad-name"] += 1
                    issues.append(Issue("warning", where, f"boxes[{i}].label",
                                        f"label {b.label!r} cannot be a person folder name ({why}): skipped",
                                        "bad-name"))
                    continue
                chosen.append((i, b, b.label))
        else:
            named = [(i, b) for i, b in enumerate(s.boxes) if b.label == person]
            generic = [(i, b) for i, b in enumerate(s.boxes)
                       if b.label != person and is_generic(b.label, allow_labels=allow_labels)]
            skipped["other-person"] += len(s.boxes) - len(named) - len(generic)
            if named:
                skipped["generic-label"] += len(generic)
                chosen = [(i, b, person) for i, b in named]
            elif len(generic) == 1:
                chosen = [(generic[0][0], generic[0][1], person)]
            elif generic:
                skipped["several-faces"] += len(generic)
                issues.append(Issue("info", where, "shapes",
                                    f"{len(generic)} unnamed faces: which one is {person}? skipped (label it "
                                    f"{person!r} in labelme to use this image)", "several-faces"))
        for i, b, name in chosen:
            if min(b.width, b.height) < min_face:
                skipped["tiny"] += 1
                continue
            stem = output_stem(s.image_id)
            out_name = f"{stem}_{i}.jpg"
            if (name, out_name) in used:  # `a.jpg` and `a.png` share a stem: keep the extension
                out_name = f"{stem}-{Path(s.image_id).suffix.lstrip('.').lower()}_{i}.jpg"
            if (name, out_name) in used:
                raise DatatoolError(f"{where}: two crops would both be named people/{name}/{out_name}")
            used.add((name, out_name))
            jobs.append(CropJob(sample=s, index=i, box=b, person=name, name=out_name))
    return jobs


def _check_out(root: Path, out: Path) -> None:
    from .dataset import images_dir

    r, o, base = Path(root).resolve(), Path(out).resolve(), images_dir(root).resolve()
    if o == r or o == base or base in o.parents or o in r.parents:
        raise DatatoolError(f"{out}: --out must be a new folder outside the dataset {root} "
                            "(crop derives a new dataset; it never writes into its source)")


def crop_dataset(root: Path, *, out: Path, person: str | None = None, label_as_person: bool = False,
                 allow_labels=(), margin: float = DEFAULT_MARGIN, size: int = DEFAULT_SIZE,
                 min_face: float = DEFAULT_MIN_FACE, quality: int = 95, overwrite: bool = False,
                 skip_errors: bool = False, progress: bool = True) -> CropResult:
    """Cut every usable box of the labelme dataset at `root` into `out/people/NAME/*.jpg`.

    Exactly one of `person` (every face is this person) and `label_as_person` (the box label
    is the name) is required; see the module docstring for the rules, the square crop and the
    group stamp. Writes `out/crops.csv` and `out/dataset.json`. Raises `DatatoolError` for a
    bad dataset or options (before writing anything); problems with single files are
    collected in `CropResult.issues` and counted in `CropResult.skipped`. An image whose labelme
    JSON has an error raises `RejectedImages` before anything is written, unless `skip_errors`
    leaves it out (`CropResult.rejected`).
    """
    from tqdm import tqdm

    from .core.provenance import stamp_jpeg
    from .dataset import load_dataset, refuse_rejected
    from .core.fsutil import (command_line, prepare_output_dir, read_record, write_bytes_atomic, write_record,
                              write_text_atomic)
    from .core.images import encode_jpeg, load_rgb, sha256_file

    root, out = Path(root), Path(out)
    if person is not None and label_as_person:
        raise DatatoolError("--person and --label-as-person: choose one, not both")
    if person is None and not label_as_person:
        raise DatatoolError("say whose faces these are: --person NAME (all of them) or --label-as-person "
                            "(each box's label is the name)")
    if person is not None:
        why = person_name_problem(person)
        if why:
            raise DatatoolError(f"--person: {person!r} is not usable as a folder name ({why})")
    if not margin >= 0:
        raise DatatoolError(f"--margin: expected a fraction >= 0, got {margin}")
    if not 16 <= int(size) <= 4096:
        raise DatatoolError(f"--size: expected 16..4096 pixels, got {size}")
    if not 1 <= int(quality) <= 100:
        raise DatatoolError(f"--quality: expected 1..100, got {quality}")
    if not min_face >= 0:
        raise DatatoolError(f"--min-face: expected pixels >= 0, got {min_face}")

    ds = load_dataset(root)  # a missing or non-folder root raises here, naming it
    _check_out(root, out)
    result = CropResult(out=out, issues=list(ds.issues), rejected=refuse_rejected(ds, skip_errors=skip_errors))
    if not ds.samples:
        raise DatatoolError(f"{root}: no images found (a dataset is a folder with images/ and labelme JSONs)"
                            + (f"; {len(ds.issues)} unreadable file(s), e.g. {ds.issues[0]}" if ds.issues else ""))
    jobs = plan_crops(ds.samples, person=person, label_as_person=label_as_person, allow_labels=allow_labels,
                      min_face=min_face, skipped=result.skipped, issues=result.issues)
    if not jobs:
        raise DatatoolError(_nothing_to_crop(root, result.skipped, label_as_person=label_as_person, person=person))

    prepare_output_dir(out, overwrite=overwrite)
    by_sample: dict[Path, list[CropJob]] = {}
    for job in jobs:
        by_sample.setdefault(job.sample.image_path, []).append(job)
    rows = []
    sources: dict[str, set] = {}
    bar = tqdm(total=len(jobs), desc="crop", unit="face", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)
    try:
        for img_path, its in by_sample.items():
            s = its[0].sample
            try:
                rgb = load_rgb(img_path)
                group = s.group or sha256_file(img_path)
            except (ImageError, OSError) as e:
                result.skipped["bad-image"] += 1
                if not isinstance(e, ImageError):
                    e = ImageError(path=img_path, reason=f"cannot read ({e.strerror or e})")
                result.issues.append(Issue.from_error(e, suffix=" (skipped)", code="bad-image"))
                bar.update(len(its))
                continue
            if (rgb.shape[1], rgb.shape[0]) != (s.width, s.height):
                result.skipped["bad-image"] += 1
                result.issues.append(Issue(
                    "error", str(s.annotation_path or img_path), "imageWidth/imageHeight",
                    f"annotation says {s.width}x{s.height} but the image displays as {rgb.shape[1]}x{rgb.shape[0]} "
                    "(boxes would miss the faces; skipped - run `datatool validate --fix`)", "size-mismatch"))
                bar.update(len(its))
                continue
            for job in its:
                crop, sq = cut_face(rgb, job.box, margin=margin, size=size)
                info = {"group": group, "source": s.image_id, "person": job.person, "box_index": job.index,
                        "box": [round(v, 2) for v in job.box.xyxy], "square": [int(v) for v in sq.xyxy]}
                if s.attributes.get("session"):
                    info["session"] = str(s.attributes["session"])
                path = out / "people" / job.person / job.name
                write_bytes_atomic(path, stamp_jpeg(encode_jpeg(crop, quality=quality), info), overwrite=overwrite)
                result.written.append(path)
                result.per_person[job.person] += 1
                sources.setdefault(job.person, set()).add(s.image_id)
                rows.append([path.relative_to(out).as_posix(), job.person, s.image_id, job.index, job.box.label,
                             *(f"{v:g}" for v in job.box.xyxy), *(int(v) for v in sq.xyxy), group])
                bar.update(1)
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        bar.close()
    result.sources_per_person = {p: len(v) for p, v in sorted(sources.items())}
    result.per_person = Counter(dict(sorted(result.per_person.items())))

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(MANIFEST_FIELDS)
    w.writerows(sorted(rows))
    write_text_atomic(out / MANIFEST, buf.getvalue())
    write_record(
        out,
        command=command_line(),
        stage="crop",
        source=str(root),
        person=person,
        label_as_person=bool(label_as_person),
        allow_labels=sorted(allow_labels),
        margin=margin,
        size=int(size),
        min_face=min_face,
        quality=int(quality),
        counts={"crops": result.total, "people": dict(result.per_person),
                "source_images": dict(result.sources_per_person), "skipped": dict(sorted(result.skipped.items()))},
        interrupted=result.interrupted,
        parent=read_record(root),
    )
    return result


def _nothing_to_crop(root: Path, skipped: Counter, *, label_as_person: bool, person: str | None) -> str:
    msg = f"{root}: no face to crop"
    reasons = ", ".join(f"{n} {SKIP_REASONS[k]}" for k, n in skipped.items() if n)
    if reasons:
        msg += f" ({reasons})"
    if label_as_person and skipped["generic-label"]:
        msg += ("; --label-as-person takes each box's label as the person's name, but these boxes are "
                "labelled like 'face': relabel them with names in labelme (datatool label DATASET "
                "--labels alice,bob), use --person NAME if they all show one person, or --allow-label "
                "LABEL to use such a label as a name anyway")
    elif person and skipped["several-faces"]:
        msg += f"; label {person}'s face as {person!r} in images with several faces"
    elif skipped["tiny"]:
        msg += "; lower --min-face to keep small faces"
    return msg


def crop_sheet(result: CropResult, path: Path, *, per_person: int = 8, cell: int = 96) -> int:
    """A contact sheet of the first `per_person` crops of each person (one row each, titled with
    the name) at `path`; returns how many crops it shows."""
    import numpy as np

    from .core.draw import contact_sheet, save_rgb
    from .core.images import load_rgb

    by_person: dict[str, list[Path]] = {}
    for p in sorted(result.written):
        by_person.setdefault(p.parent.name, []).append(p)
    images, titles = [], []
    cols = max((min(len(v), per_person) for v in by_person.values()), default=1)
    for name, paths in sorted(by_person.items()):
        row = paths[:per_person]
        for k in range(cols):
            if k < len(row):
                images.append(load_rgb(row[k]))
                titles.append(name if k == 0 else "")
            else:  # an empty cell keeps one person per row
                images.append(np.full((2, 2, 3), 32, np.uint8))
                titles.append("")
    save_rgb(path, contact_sheet(images, titles=titles, cell=cell, cols=cols))
    return sum(min(len(v), per_person) for v in by_person.values())
