"""`convert` between annotation formats and `merge` several datasets into one.

Both derive a new folder from their sources and never touch the sources (an output inside or
around a source is refused). Every destination file is checked before anything is written
(refused without `overwrite`), each file is written to a temporary name and renamed when
complete - `convert` writes the whole folder beside `out` and renames it when complete - and
`dataset.json` (the provenance record, written last) says what made the folder.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from .core.errors import AnnotationError, DatatoolError, ImageError
from .core.images import is_unsupported_image, unsupported_format
from .core.issues import Issue, has_errors
from .core.sample import Sample


@dataclass(frozen=True)
class FaceFilter:
    """Which faces `convert` keeps.

    - `min_face`: drop faces whose smaller side is below this many pixels (0 = keep all).
    - `skip_invalid`: drop faces WIDER marks `invalid=1`.
    - `max_blur`: drop faces with WIDER `blur` above this (0 clear, 1 normal, 2 heavy; None = keep).
    Zero-area faces (WIDER has some) are always dropped: no format after this one can hold them.
    An image whose every face is dropped is skipped rather than kept as a negative, because it
    still shows faces; images that had no face to begin with stay negatives.
    """

    min_face: float = 0.0
    skip_invalid: bool = False
    max_blur: int | None = None

    def keeps(self, box) -> bool:
        attrs = box.attributes or {}
        if box.width <= 0 or box.height <= 0:
            return False
        if min(box.width, box.height) < self.min_face:
            return False
        if self.skip_invalid and int(attrs.get("invalid", 0) or 0):
            return False
        if self.max_blur is not None and int(attrs.get("blur", 0) or 0) > self.max_blur:
            return False
        return True


@dataclass
class ConvertResult:
    """What `convert` did: counts for the summary line and every issue met while reading."""

    images: int = 0
    faces: int = 0
    negatives: int = 0
    skipped_faces: int = 0
    skipped_images: int = 0
    unlabeled: int = 0
    bad_samples: int = 0
    issues: list[Issue] = field(default_factory=list)

    def summary(self) -> str:
        text = (f"{self.images} images, {self.faces} faces, {self.negatives} negatives; "
                f"skipped by filter: {self.skipped_faces} faces, {self.skipped_images} images")
        if self.unlabeled:
            text += f"; {self.unlabeled} unlabeled images left out"
        if self.bad_samples:
            text += f"; {self.bad_samples} unreadable samples left out"
        return text

    def counts(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "issues"}


PER_IMAGE_FORMATS = ("labelme", "voc", "yolo")  # one annotation file per image


class ReadErrors(DatatoolError):
    """The source has errors; nothing was written. `issues` holds all of them (for a table)."""

    def __init__(self, message: str, issues: list[Issue]):
        super().__init__(message)
        self.issues = issues


def format_module(name: str):
    from .dataset import FORMATS

    try:
        return FORMATS[name]
    except KeyError:
        raise DatatoolError(f"unknown format {name!r} (choose from {', '.join(FORMATS)})") from None


def apply_filter(samples: list[Sample], face_filter: FaceFilter, result: ConvertResult) -> list[Sample]:
    """Samples with filtered boxes removed (counting what was dropped into `result`)."""
    kept = []
    for s in samples:
        boxes = tuple(b for b in s.boxes if face_filter.keeps(b))
        dropped = len(s.boxes) - len(boxes)
        result.skipped_faces += dropped
        if s.boxes and not boxes:
            result.skipped_images += 1
            continue
        kept.append(s.replace(boxes=boxes) if dropped else s)
    return kept


def check_unique_outputs(samples: list[Sample], *, src: Path, dst_format: str) -> None:
    """`DatatoolError` before anything is written if two samples would be written to one file:
    one image key listed twice (a COCO file naming a file twice), or - for formats with one
    annotation file per image - two keys that differ only in their extension (`a.jpg`, `a.png`)."""
    from pathlib import PurePosixPath

    seen: dict[str, Sample] = {}
    for s in samples:
        key = PurePosixPath(s.image_id).with_suffix("").as_posix() if dst_format in PER_IMAGE_FORMATS else s.image_id
        first = seen.setdefault(key, s)
        if first is s:
            continue
        if first.image_id == s.image_id:
            raise DatatoolError(f"{src}: image {s.image_id!r} is listed twice; nothing written "
                                "(each image may appear once)")
        raise DatatoolError(f"{src}: images {first.image_id!r} and {s.image_id!r} share one name without "
                            f"extension, so their {dst_format} annotation files would be one file; nothing written "
                            "(rename one of them)")


def check_images(samples: list[Sample], issues: list[Issue], *, workers: int | None = None,
                 progress_bar: bool = False) -> set[int]:
    """Decode every labeled sample's image in full (`core.images.verify`, the check `validate`
    makes) and compare its displayed size with the annotation's; each problem is appended to
    `issues` as an error. Returns the indices of the samples whose image is unusable.

    Threads, as in `validate`: the decoders release the GIL."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    from .core.images import require_strict_decoding, transposes, verify
    from .formats._io import progress

    require_strict_decoding()

    def check(s: Sample) -> Issue | None:
        name = str(s.annotation_path or s.image_path)
        if not s.image_path.is_file():
            return Issue("error", name, "imagePath", f"image not found: {s.image_path}", "missing-image")
        if is_unsupported_image(s.image_path):  # a GIF named in a COCO/VOC/CSV file
            return Issue("error", name, "imagePath", f"{s.image_path}: {unsupported_format(s.image_path)}",
                         "unsupported-image")
        try:
            f = verify(s.image_path)
        except ImageError as e:
            return Issue.from_error(e, code="bad-image", file=s.image_path)
        except Exception as e:  # a decoder bug must not end the whole run: report the file
            return Issue("error", str(s.image_path), "", f"cannot decode ({type(e).__name__}: {e})", "bad-image")
        if (f.width, f.height) != (s.width, s.height):
            exif = (f" (EXIF orientation {f.orientation}: stored {f.stored_width}x{f.stored_height})"
                    if transposes(f.orientation) else "")
            return Issue("error", name, f"{s.image_id} size", f"annotation says {s.width}x{s.height} but the "
                         f"image is {f.width}x{f.height} as displayed{exif}", "size-mismatch")
        return None

    todo = [(k, s) for k, s in enumerate(samples) if s.labeled]
    workers = max(1, workers or min(4, os.cpu_count() or 1))
    bad = set()
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        found = pool.map(check, [s for _, s in todo])
        for (k, _), issue in zip(todo, progress(found, desc="check images", enabled=progress_bar, total=len(todo))):
            if issue is not None:
                bad.add(k)
                issues.append(issue)
    finally:  # on Ctrl-C, drop the queued images instead of decoding them all before exiting
        pool.shutdown(wait=True, cancel_futures=True)
    return bad


def _inside(path: Path, folder: Path) -> bool:
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def convert(src: Path, out: Path, *, src_format: str, dst_format: str, images: Path | None = None,
            face_filter: FaceFilter = FaceFilter(), overwrite: bool = False, skip_errors: bool = False,
            command: str = "datatool convert", progress_bar: bool = False) -> ConvertResult:
    """Read `src` as `src_format` and write `out` as `dst_format` (images copied alongside).

    Every image is decoded in full and its size checked against the annotation, as `validate`
    does (`check_images`). Errors found while reading stop the conversion before anything is
    written (raised as `ReadErrors` with every issue) unless `skip_errors`, which leaves the bad
    samples out.
    Unlabeled images are left out (no format but labelme can say "not labelled yet").
    """
    from .core.fsutil import refuse_overlap, staged_output_dir, write_record

    reader, writer = format_module(src_format), format_module(dst_format)
    src, out = Path(src), Path(out)
    if not src.exists():
        raise DatatoolError(f"{src}: source not found")
    for source in (src, images):  # the source is read, never written: not even with --overwrite
        if source is not None:
            refuse_overlap(out, source)
    result = ConvertResult()
    kwargs = {"progress_bar": progress_bar} if src_format == "wider" else {}
    samples = reader.read(src, images=images, issues=result.issues, **kwargs)

    # Every image is checked up front: a missing one would fail half-way through copying, and a
    # truncated or mis-sized one would be copied as if it were usable.
    unusable = check_images(samples, result.issues, progress_bar=progress_bar)
    if has_errors(result.issues):
        n = sum(i.severity == "error" for i in result.issues)
        if not skip_errors:
            raise ReadErrors(f"{src}: {n} error(s) in the source; nothing written "
                             "(fix them, or pass --skip-errors to leave those samples out)", result.issues)
        # One-file formats (WIDER, COCO, CSV) already left out every image with an error while
        # reading; for one-file-per-image formats an error names the sample's own file (a
        # labelme JSON with an error is not even a sample: `dataset.load_dataset` rejects it).
        per_file = src_format in PER_IMAGE_FORMATS
        bad_files = {i.file for i in result.issues if i.severity == "error"} if per_file else set()
        kept = [s for k, s in enumerate(samples)
                if k not in unusable and str(s.annotation_path) not in bad_files]
        present = {str(p) for s in samples for p in (s.annotation_path, s.image_path) if p is not None}
        result.bad_samples = len(samples) - len(kept) + len(bad_files - present)
        samples = kept

    result.unlabeled = sum(not s.labeled for s in samples)
    samples = [s for s in samples if s.labeled]
    if not samples:
        raise DatatoolError(f"{src}: no labeled images found, nothing to write")
    samples = apply_filter(samples, face_filter, result)
    if not samples:
        raise DatatoolError(f"{src}: every image was skipped by the filters, nothing to write")
    result.images = len(samples)
    result.faces = sum(len(s.boxes) for s in samples)
    result.negatives = sum(not s.boxes for s in samples)

    check_unique_outputs(samples, src=src, dst_format=dst_format)
    # Written into a folder beside `out` that replaces it only when complete: a conversion that
    # fails half way (two images with one stem, a file named twice) leaves no partial output.
    with staged_output_dir(out, overwrite=overwrite) as stage:
        writer.write(samples, stage, overwrite=overwrite, progress_bar=progress_bar)
        write_record(stage, command=command, source=str(src), images_source=str(images) if images else None,
                     parents=[str(src)], src_format=src_format, dst_format=dst_format,
                     filters=asdict(face_filter), counts=result.counts())
    return result


@dataclass
class MergeResult:
    """What `merge` did, per source and in total."""

    images: int = 0
    annotations: int = 0
    unlabeled: int = 0
    orphan_jsons: int = 0
    people_crops: int = 0
    prefixes: dict[str, str] = field(default_factory=dict)  # source folder -> its folder under images/
    issues: list[Issue] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.images} images ({self.annotations} with labelme JSON, {self.unlabeled} unlabeled) "
                f"from {len(self.prefixes)} datasets; {self.orphan_jsons} JSONs without image and "
                f"{self.people_crops} person crops carried over")


def merge_prefixes(sources: list[Path]) -> list[str]:
    """The folder each source gets under `images/`: its own folder name, `-2`, `-3`... on a clash.

    Every source is prefixed (not only on key collisions), so a key in the merged dataset says
    where it came from and a later merge with one more source never renames earlier keys.
    """
    names, seen = [], {}
    for src in sources:
        base = Path(src).resolve().name or "dataset"
        seen[base] = seen.get(base, 0) + 1
        name = base if seen[base] == 1 else f"{base}-{seen[base]}"
        while name in names:
            seen[base] += 1
            name = f"{base}-{seen[base]}"
        names.append(name)
    return names


def merge(sources: list[Path], out: Path, *, overwrite: bool = False, command: str = "datatool merge",
          progress_bar: bool = False) -> MergeResult:
    """Merge labelme datasets (e.g. capture sessions) into `out/images/<source name>/<key>`.

    Nothing is lost: every image (labeled or not) is copied; each labelme JSON is copied with
    only its `imagePath` rewritten (shapes of any type, flags and the `facekit` object with group
    and session stay as they were); JSONs without an image and `people/NAME/*` crops are carried
    too (crops to `out/people/NAME/<source name>/`). A JSON that cannot be parsed is copied
    byte for byte and reported. The provenance record lists the parents and their prefixes.
    """
    from .dataset import IMAGES, PEOPLE, images_dir, list_people, walk
    from .formats._io import check_free, copy_image, progress
    from .formats.labelme import json_path_for, load_json
    from .core.fsutil import prepare_output_dir, read_record, write_bytes_atomic, write_json_atomic, write_record

    sources, out = [Path(s) for s in sources], Path(out)
    if len(sources) < 1:
        raise DatatoolError("merge needs at least one source dataset")
    for src in sources:
        images_dir(src)  # raises a clear error for a missing folder or a file
        if _inside(out, src):
            raise DatatoolError(f"{out}: the output folder is (inside) the source {src}; choose another --out")
        if _inside(src, out):
            raise DatatoolError(f"{src}: a source lies inside the output folder {out}")
    if len({s.resolve() for s in sources}) != len(sources):
        raise DatatoolError("the same source dataset is given twice")

    result = MergeResult()
    copies: list[tuple[Path, Path]] = []  # (source file, destination) for images and crops
    jsons: list[tuple[Path, Path, str | None]] = []  # (source JSON, destination, new imagePath or None = verbatim)
    parents = []
    for src, prefix in zip(sources, merge_prefixes(sources)):
        listing = walk(src)
        result.prefixes[str(src)] = prefix
        for img, key, jp in listing.images:
            dst = out / IMAGES / prefix / key
            copies.append((img, dst))
            result.images += 1
            if jp is not None:
                jsons.append((jp, json_path_for(dst), dst.name))
                result.annotations += 1
            else:
                result.unlabeled += 1
        for jp in listing.orphan_jsons:
            rel = jp.relative_to(listing.base)
            jsons.append((jp, out / IMAGES / prefix / rel, None))  # kept as it is: its image is missing
            result.orphan_jsons += 1
            result.issues.append(Issue("warning", str(jp), "imagePath", "labelme JSON without an image beside it "
                                       "(copied unchanged)", "orphan-json"))
        for person, crops in list_people(src).items():
            for crop in crops:
                rel = crop.relative_to(Path(src) / PEOPLE / person)
                copies.append((crop, out / PEOPLE / person / prefix / rel))
                result.people_crops += 1
        parents.append({"path": str(src), "prefix": prefix, "images": len(listing.images),
                        "record": read_record(src)})

    dests = [d for _, d in copies] + [d for _, d, _ in jsons]
    if len(set(dests)) != len(dests):
        dup = next(d for d in dests if dests.count(d) > 1)
        raise DatatoolError(f"{dup}: two source files would land here (same stem with different extensions?)")
    check_free(dests, overwrite=overwrite)
    prepare_output_dir(out, overwrite=overwrite)

    for src_file, dst in progress(copies, desc="copy images", enabled=progress_bar):
        copy_image(src_file, dst, overwrite=overwrite)
    for jp, dst, image_name in progress(jsons, desc="write JSONs", enabled=progress_bar):
        if image_name is None:
            write_bytes_atomic(dst, jp.read_bytes(), overwrite=overwrite)
            continue
        try:
            data = load_json(jp)
        except AnnotationError as e:
            result.issues.append(Issue.from_error(e, severity="warning", suffix=" (copied unchanged)",
                                                  code="bad-json"))
            write_bytes_atomic(dst, jp.read_bytes(), overwrite=overwrite)
            continue
        data["imagePath"] = image_name  # the JSON sits beside its image in the merged tree
        write_json_atomic(dst, data, overwrite=overwrite)
    write_record(out, command=command, parents=parents,
                 counts={k: v for k, v in asdict(result).items() if k not in ("issues", "prefixes")})
    return result
