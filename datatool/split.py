"""Grouped, stratified train/val/test split of a dataset into TFRecord shards.

Leakage: every image belongs to a *unit* that is never divided between splits. The unit is
the sample's `group` (sha256 of the original image an augmented variant came from; the
sha256 of the image's own bytes when the annotation names none), or with
`group_by="session"` the capture `session` (falling back to the group), so near-duplicate
frames of one webcam session stay together. With `group_near_duplicates`, units holding
near-duplicate images (perceptual hashes within `near_dup_distance` bits, `core.neardup`) are
merged into one before assignment, so two captures of the same scene never straddle splits even
across groups and sessions. It is off by default: it decodes every image (grayscale at a reduced
scale, `core.quality.phash_image`, from the bytes the plan kept; the plan otherwise only reads
headers and passes JPEG bytes through; bench/health.py measures the cost), and it changes the
assignment of existing datasets (same seed, same bytes holds only without it); `datatool inspect`
lists near-duplicate leaks either way and points at the option.

Assignment (deterministic, documented here because no library splitter does grouped +
stratified + three-way ratios; scikit-learn's `StratifiedGroupKFold` only makes k equal folds):

1. Each unit gets a stratum: for detection `negative` when most of its images have no face,
   else `face`; for identity the person most of its images show.
2. Units are ordered by `sha256(f"{seed}:{unit}")` - a seeded shuffle that does not depend on
   listing order and keeps the relative order of existing units when new ones are added -
   then stably by size, largest first (big units placed first pack better).
3. Strata are processed smallest first. Each unit goes to the split with the largest
   *deficit*: `ratio * (images of the strata processed so far) - images already assigned`.
   Targets are cumulative, so the last (largest) stratum absorbs the rounding of the earlier
   ones: each split ends within about one unit's size of its share overall, and each stratum
   gets its share too.
4. A split with a non-zero ratio left empty (tiny datasets) takes the smallest unit of the
   split with the most units, when that split has more than one; if it still is empty, a
   warning says so.

Same inputs and seed -> same split and byte-identical shards.

One pass per image: the plan reads each file once (its header probed from those bytes, its
sha256 taken when no group is named) and hands the bytes to the write stage, up to
`HANDOVER_BYTES` in all; only past that budget is a file read a second time.

Shards: `{split}-{i:05d}-of-{n:05d}.tfrecord`. `shards="auto"` aims at ~150 MB per shard
(estimated from the source files' sizes, scaled for `max_side`), and gives `train` at least
`min(4, images // 32)` shards so a multi-worker reader (tf.data interleave, tf.distribute
auto-sharding by file) has several files to spread. Records are in a seeded shuffled order,
cut into contiguous shards. Every shard is written under a temporary name and all are
renamed only once every shard is complete, so an error or Ctrl-C leaves no `.tfrecord`.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import threading
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .dataset import image_key, list_people, load_dataset, refuse_rejected
from .core.errors import DatatoolError, ImageError
from .core.fsutil import (atomic_path, command_line, prepare_output_dir, read_record, write_record,
                          write_text_atomic)
from .core.images import ImageProbe, decode_rgb, encode_jpeg, sha256_bytes
from .core.images import probe as probe_image
from .core.issues import Issue
from .core.neardup import DEFAULT_DISTANCE, check_distance, group_near_duplicates as merge_near_duplicate_units
from .core.sample import Sample
from .core.tfrecord import SHARD_RE, SPLITS, shard_name

TASKS = ("detection", "identity")
GROUP_BY = ("group", "session")
TARGET_SHARD_BYTES = 150 * 1024 * 1024
MIN_RECORDS_PER_SHARD = 32
MAX_MIN_TRAIN_SHARDS = 4
NEGATIVE = "negative"
FACE = "face"
JPEG_QUALITY = 95


@dataclass(frozen=True)
class SplitItem:
    """One image on its way into a split: the sample plus what the split decides by."""

    sample: Sample
    unit: str  # the leakage unit: group (or session)
    stratum: str
    identity: tuple[int, str] | None = None  # (0-based label, name) for identity data
    file_bytes: int = 0
    file_sha256: str = ""  # set when computed (no group given): reused as image/key/sha256
    probe: ImageProbe | None = None
    storable: bool = False  # the file's bytes can go into a record untouched (`storable_as_is`)
    data: bytes | None = field(default=None, repr=False, compare=False)  # see _Handover


@dataclass(frozen=True)
class SplitSummary:
    """What `split` wrote: per-split counts, shard names, excluded images and warnings."""

    out: Path
    task: str
    counts: dict  # split -> {"images", "faces", "negatives", "groups", ...}
    shards: dict  # split -> [shard file names]
    excluded: tuple[Issue, ...] = ()
    warnings: tuple[str, ...] = ()
    label_map: dict = field(default_factory=dict)
    passthrough: int = 0  # images whose JPEG bytes went in untouched
    reencoded: int = 0
    merged_units: int | None = None  # units merged by near-duplicate grouping (None: not asked for)


def parse_ratios(text: str | Sequence[float]) -> tuple[float, float, float]:
    """`"0.7,0.15,0.15"` (or a sequence) -> three non-negative ratios summing to 1 (normalized)."""
    if isinstance(text, str):
        parts = [p for p in text.replace(" ", "").split(",") if p]
        try:
            values = [float(p) for p in parts]
        except ValueError as e:
            raise DatatoolError(f"--ratios: expected three numbers like 0.7,0.15,0.15, got {text!r}") from e
    else:
        values = [float(v) for v in text]
    if len(values) != 3:
        raise DatatoolError(f"--ratios: expected three numbers (train,val,test), got {len(values)}")
    if any(not math.isfinite(v) or v < 0 for v in values) or sum(values) <= 0:
        raise DatatoolError(f"--ratios: expected non-negative numbers with a positive sum, got {values}")
    total = sum(values)
    if abs(total - 1.0) > 1e-6 and abs(total - 100.0) > 1e-6:
        raise DatatoolError(f"--ratios: should sum to 1 (or 100), got {total:g}")
    return tuple(v / total for v in values)


def _unit_order_key(seed: int, unit: str) -> str:
    return hashlib.sha256(f"{seed}:{unit}".encode("utf-8")).hexdigest()


def assign_splits(units: dict[str, tuple[str, int]], *, ratios: Sequence[float], seed: int = 0,
                  ) -> tuple[dict[str, str], list[str]]:
    """Assign units to splits (the algorithm in the module docstring).

    `units` maps unit id -> (stratum, number of images). Returns (unit -> split name, warnings).
    Pure and deterministic: the same units, ratios and seed give the same assignment.
    """
    ratios = tuple(float(r) for r in ratios)
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for unit, (stratum, _size) in units.items():
        by_stratum[stratum].append(unit)
    strata = sorted(by_stratum, key=lambda s: (sum(units[u][1] for u in by_stratum[s]), s))
    assigned = {name: 0 for name in SPLITS}
    members: dict[str, list[str]] = {name: [] for name in SPLITS}
    seen_total = 0
    result: dict[str, str] = {}
    for stratum in strata:
        order = sorted(by_stratum[stratum], key=lambda u: _unit_order_key(seed, u))
        order.sort(key=lambda u: -units[u][1])  # stable: shuffled order kept among equal sizes
        seen_total += sum(units[u][1] for u in order)
        for unit in order:
            deficits = [ratios[k] * seen_total - assigned[name] for k, name in enumerate(SPLITS)]
            best = max(range(len(SPLITS)), key=lambda k: (ratios[k] > 0, deficits[k], -k))
            name = SPLITS[best]
            result[unit] = name
            assigned[name] += units[unit][1]
            members[name].append(unit)

    warnings = []
    for k, name in enumerate(SPLITS):
        if ratios[k] <= 0 or members[name]:
            continue
        donor = max(SPLITS, key=lambda s: (len(members[s]), assigned[s]))
        if len(members[donor]) > 1:
            unit = min(members[donor], key=lambda u: (units[u][1], _unit_order_key(seed, u)))
            members[donor].remove(unit)
            members[name].append(unit)
            assigned[donor] -= units[unit][1]
            assigned[name] += units[unit][1]
            result[unit] = name
        else:
            warnings.append(f"split '{name}' is empty: only {len(units)} group(s) to share between "
                            f"{sum(1 for r in ratios if r > 0)} splits")
    return result, warnings


# ----------------------------------------------------------------------------- collecting

def _detection_items(root: Path, *, group_by: str, issues: list[Issue], workers: int | None = None,
                     skip_errors: bool = False) -> tuple[list[SplitItem], list[Sample]]:
    ds = load_dataset(root)
    refuse_rejected(ds, skip_errors=skip_errors)
    issues.extend(i for i in ds.issues if i.severity == "error")
    unlabeled = [s for s in ds.samples if not s.labeled]
    for s in unlabeled:
        issues.append(Issue("warning", str(s.image_path), "", "unlabeled (no labelme JSON): excluded from the split",
                            "unlabeled"))

    handover = _Handover()

    def make(s):
        return _make_item(s, group_by=group_by, stratum=FACE if s.boxes else NEGATIVE, handover=handover)

    labeled = [s for s in ds.samples if s.labeled]
    items = []
    for got in _ordered_parallel(make, labeled, workers=_plan_workers(workers, labeled)):
        (items if isinstance(got, SplitItem) else issues).append(got)
    return items, unlabeled


HANDOVER_BYTES = 256 << 20  # image bytes the plan may hold for the write stage


class _Handover:
    """Room for image bytes the plan reads and the write stage reuses, `HANDOVER_BYTES` in all,
    so those files are read from disk once (reading a webcam frame costs about as much as
    hashing it). Past the budget the write stage reads the file again. Thread-safe."""

    def __init__(self, budget: int | None = None):
        self.left = HANDOVER_BYTES if budget is None else budget
        self._lock = threading.Lock()

    def reserve(self, size: int) -> bool:
        with self._lock:
            if size > self.left:
                return False
            self.left -= size
            return True


def _workers(workers: int | None) -> int:
    return workers or min(8, os.cpu_count() or 1)


LARGE_FILE = 1 << 20  # bytes; see _plan_workers


def _plan_workers(workers: int | None, samples: Sequence[Sample]) -> int:
    """Threads for checking and hashing: as asked, else several only for large files (sha256
    releases the GIL, so a photo of a few MB hashes in parallel; for webcam-sized frames the
    hand-offs between threads cost more than they overlap), judged from the first few files."""
    if workers is not None or len(samples) < 2:
        return _workers(workers)
    sizes = []
    for s in samples[:8]:
        try:
            sizes.append(s.image_path.stat().st_size)
        except OSError:
            pass
    return _workers(None) if sizes and sum(sizes) / len(sizes) >= LARGE_FILE else 1


def _make_item(s: Sample, *, group_by: str, stratum: str, identity: tuple[int, str] | None = None,
               size_from_image: bool = False, handover: "_Handover | None" = None) -> SplitItem | Issue:
    """Check the image header against the annotation and fill in the group; an `Issue` if unusable.

    The header is probed once here, from the file's bytes when they are read: always when the
    annotation names no group (they are hashed), and while `handover` has room for them (they
    are kept for the write stage). Otherwise - a group given (augment writes one into every
    JSON) and no room - only the header is read. Whether the bytes can go into a record
    untouched is decided for good when the record is written (`prepare_image`).
    """
    path = s.image_path
    try:
        if s.group:  # the bytes are needed only if they can be kept: ask before reading
            size = path.stat().st_size
            keep = handover is not None and handover.reserve(size)
            data = path.read_bytes() if keep else None
        else:
            data = path.read_bytes()
            size = len(data)
            keep = handover is not None and handover.reserve(size)
        probe = probe_image(data, name=str(path)) if data is not None else probe_image(path)
    except OSError as e:
        return Issue("error", str(s.image_path), "", f"cannot read image ({e.strerror or e}) (excluded)", "bad-image")
    except ImageError as e:
        return Issue.from_error(e, suffix=" (excluded)", code="bad-image")
    if size_from_image:
        s = s.replace(width=probe.width, height=probe.height)
    if (probe.width, probe.height) != (s.width, s.height):
        where = str(s.annotation_path or s.image_path)
        return Issue("error", where, "imageWidth/imageHeight",
                     f"annotation says {s.width}x{s.height} but the image displays as {probe.width}x{probe.height} "
                     "(boxes would land in the wrong place; excluded - run `datatool validate --fix`)", "size-mismatch")
    file_sha = "" if s.group else sha256_bytes(data)
    group = s.group or file_sha
    if not s.group:
        s = s.replace(group=group)
    unit = group
    if group_by == "session":
        session = s.attributes.get("session")
        unit = f"session:{session}" if session else group
    return SplitItem(sample=s, unit=unit, stratum=stratum, identity=identity, file_bytes=size,
                     file_sha256=file_sha, probe=probe, storable=storable_as_is(probe, data),
                     data=data if keep else None)


def _identity_items(root: Path, *, group_by: str, issues: list[Issue]) -> tuple[list[SplitItem], list[str]]:
    """`people/NAME/*` images as identity items; a same-stem labelme JSON, or else the `facekit:`
    JPEG comment that `crop` and `capture` stamp, may carry group/session."""
    from .core.provenance import capture_info
    from .formats.labelme import FACEKIT_KEY, json_path_for, load_json

    people = {name: imgs for name, imgs in list_people(root).items()}
    if not people:
        raise DatatoolError(f"{root}: no people/NAME/ folders with images (needed for --task identity)")
    names = []
    for name, imgs in people.items():
        if imgs:
            names.append(name)
        else:
            issues.append(Issue("warning", str(Path(root) / "people" / name), "", "no images: person skipped",
                                "empty-person"))
    items, handover = [], _Handover()
    for label, name in enumerate(names):
        for img in people[name]:
            extra = {}
            jp = json_path_for(img)
            if jp.exists():
                try:
                    extra = load_json(jp).get(FACEKIT_KEY) or {}
                except DatatoolError as e:
                    issues.append(Issue.from_error(e, severity="warning", suffix=" (group taken from the image bytes)",
                                                  code="bad-json"))
                if not isinstance(extra, dict):
                    extra = {}
            else:
                extra = capture_info(img) or {}
            key = Path(img).relative_to(root).as_posix()
            attrs = {"person": name, **({"session": extra["session"]} if extra.get("session") else {})}
            # no annotation to check the size against: _make_item takes it from the image header
            s = Sample(image_path=img, width=1, height=1, image_id=key, group=str(extra.get("group") or ""),
                       attributes=attrs)
            got = _make_item(s, group_by=group_by, stratum=name, identity=(label, name), size_from_image=True,
                             handover=handover)
            (items if isinstance(got, SplitItem) else issues).append(got)
    return items, names


# ----------------------------------------------------------------------------- images

def storable_as_is(probe: ImageProbe, data: bytes | None) -> bool:
    """Whether an image's bytes can go into a record untouched: a JPEG with no EXIF rotation
    (TensorFlow's decoder ignores EXIF), RGB or grey, complete (ends with the EOI marker; not
    checked when `data` is None, i.e. only the header was read)."""
    return (probe.format == "jpeg" and probe.orientation == 1 and probe.mode in ("RGB", "L")
            and (data is None or data.rstrip(b"\x00").endswith(b"\xff\xd9")))


def prepare_image(path: Path, *, max_side: int | None = None, probe: ImageProbe | None = None,
                  data: bytes | None = None) -> tuple[bytes, int, int, bool]:
    """Image file -> `(jpeg_bytes, width, height, passthrough)` ready for `image/encoded`.

    JPEG files that are upright (no EXIF rotation), RGB or grey, complete (end with the EOI
    marker) and within `max_side` go in byte for byte. Anything else is decoded, EXIF
    orientation applied, downscaled so the longest side is at most `max_side`, and
    re-encoded as JPEG (quality 95) - TensorFlow's decoder ignores EXIF, so this is what
    keeps boxes on the faces. `probe` (from `images.probe`, same file) skips the header;
    `data` (the file's bytes) skips the read.
    """
    if data is None:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ImageError(path=path, reason=f"cannot read image ({e.strerror or e})") from e
    probe = probe or probe_image(data, name=str(path))
    if storable_as_is(probe, data) and (max_side is None or max(probe.width, probe.height) <= max_side):
        return data, probe.width, probe.height, True
    rgb = decode_rgb(data, name=str(path), max_side=max_side)
    return encode_jpeg(rgb, quality=JPEG_QUALITY), rgb.shape[1], rgb.shape[0], False


def record_bytes(item: SplitItem, *, max_side: int | None, class_ids: dict | None,
                 data: bytes | None = None) -> tuple[bytes, bool]:
    """One item's record: its serialized `tf.train.Example` (deterministic bytes) and whether its
    JPEG went in untouched. The one function every runner (the local threads, Beam) calls per
    image. `data`: the file's bytes if the caller read them (else `item.data`, else the file is
    read here); `class_ids`: the detection label map (None for identity data)."""
    from .core.tfrecord import example_bytes

    data = item.data if data is None else data
    encoded, w, h, passed = prepare_image(item.sample.image_path, max_side=max_side, probe=item.probe, data=data)
    sha = item.file_sha256 if passed and item.file_sha256 else None
    return example_bytes(item.sample, encoded, width=w, height=h, class_ids=class_ids, identity=item.identity,
                         sha256=sha), passed


def _ordered_parallel(fn, items, *, workers: int, window: int = 64):
    """`map(fn, items)` on a thread pool, results in input order, at most `window` in flight."""
    if workers <= 1:
        yield from map(fn, items)
        return
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="facekit-split")
    pending: deque = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def shard_count(n_images: int, est_bytes: int, *, split: str, shards: str | int = "auto") -> int:
    """How many shards one split gets (see module docstring); 0 for an empty split."""
    if n_images == 0:
        return 0
    if shards != "auto":
        return max(1, min(int(shards), n_images))
    n = max(1, math.ceil(est_bytes / TARGET_SHARD_BYTES))
    if split == "train":
        n = max(n, min(MAX_MIN_TRAIN_SHARDS, n_images // MIN_RECORDS_PER_SHARD))
    return min(n, n_images)


def _estimated_bytes(item: SplitItem, max_side: int | None) -> int:
    s = item.sample
    if max_side and max(s.width, s.height) > max_side:
        return int(item.file_bytes * (max_side / max(s.width, s.height)) ** 2)
    return item.file_bytes


# ----------------------------------------------------------------------------- split

def split(root: Path, *, out: Path, ratios: Sequence[float] | str = (0.7, 0.15, 0.15), seed: int = 0,
          group_by: str = "group", shards: str | int = "auto", max_side: int | None = None,
          task: str = "detection", overwrite: bool = False, workers: int | None = None,
          progress: bool = True, group_near_duplicates: bool = False,
          near_dup_distance: int = DEFAULT_DISTANCE, skip_errors: bool = False) -> SplitSummary:
    """Split the dataset at `root` into `out/{train,val,test}-*.tfrecord`, `split.csv`, `dataset.json`.

    - `task="detection"`: labelme images (unlabeled ones excluded and reported); negatives
      (a JSON with no shapes) are stratified across splits. Class ids are 1-based, `face`=1.
    - `task="identity"`: `people/NAME/*` images, stratified per person, `labels.txt` written
      (line i is `image/class/label` i).
    - `group_by`: `"group"` or `"session"` (see module docstring for the assignment).
    - `shards`: `"auto"` or a number of shards per split. `max_side`: longest side in pixels.
    - `group_near_duplicates`: merge units that hold near-duplicate images (detection only).
    - `skip_errors`: leave out (and list as excluded) images whose labelme JSON has an error;
      without it such an image stops the split before anything is written (`RejectedImages`).
    Refuses a non-empty `out` unless `overwrite` (then stale shards from an earlier run are
    removed once the new ones are complete). Returns a `SplitSummary`.
    `split` = `write_split(plan_split(...), out=...)`: plan (read, check, assign), then write.
    """
    if Path(out).resolve() == Path(root).resolve():
        raise DatatoolError(f"{out}: --out must not be the dataset folder itself")
    plan = plan_split(root, ratios=ratios, seed=seed, group_by=group_by, shards=shards, max_side=max_side,
                      task=task, workers=workers, group_near_duplicates=group_near_duplicates,
                      near_dup_distance=near_dup_distance, skip_errors=skip_errors)
    return write_split(plan, out=out, overwrite=overwrite, workers=workers, progress=progress)


@dataclass(frozen=True)
class SplitPlan:
    """Everything decided before a byte is written: which image goes to which split and shard."""

    root: Path
    task: str
    ratios: tuple
    seed: int
    group_by: str
    max_side: int | None
    per_split: dict  # split -> [SplitItem] in record order
    shard_counts: dict  # split -> number of shards
    label_map: dict
    names: list  # identity: labels.txt lines
    issues: list  # excluded images and other problems
    warnings: list
    merged_units: int | None = None  # near-duplicate grouping: units merged (None: not asked for)
    near_dup_distance: int | None = None

    @property
    def class_ids(self) -> dict | None:
        """Box label -> class id for `record_bytes`: the label map, or None for identity records
        (their class is the person, written apart)."""
        return None if self.task == "identity" else self.label_map


def plan_split(root: Path, *, ratios: Sequence[float] | str = (0.7, 0.15, 0.15), seed: int = 0,
               group_by: str = "group", shards: str | int = "auto", max_side: int | None = None,
               task: str = "detection", workers: int | None = None, group_near_duplicates: bool = False,
               near_dup_distance: int = DEFAULT_DISTANCE, skip_errors: bool = False) -> SplitPlan:
    """Read and check the dataset, assign every image to a split and a shard (see `split`)."""
    root = Path(root)
    if group_near_duplicates:
        check_distance(near_dup_distance)
        if task != "detection":
            raise DatatoolError("--group-near-duplicates: for detection datasets only (a person's face crops look "
                                "alike by design; merging them would put each person in one split)")
    if task not in TASKS:
        raise DatatoolError(f"--task: expected one of {', '.join(TASKS)}, got {task!r}")
    if group_by not in GROUP_BY:
        raise DatatoolError(f"--group-by: expected one of {', '.join(GROUP_BY)}, got {group_by!r}")
    ratios = parse_ratios(ratios)
    if shards != "auto":
        try:
            shards = int(shards)
        except (TypeError, ValueError) as e:
            raise DatatoolError(f"--shards: expected 'auto' or a positive number, got {shards!r}") from e
        if shards < 1:
            raise DatatoolError(f"--shards: expected 'auto' or a positive number, got {shards}")
    if workers is not None and workers < 1:
        raise DatatoolError(f"--workers: expected at least 1, got {workers}")
    if max_side is not None and int(max_side) < 16:
        raise DatatoolError(f"--max-side: expected at least 16 pixels, got {max_side}")
    if not root.is_dir():
        raise DatatoolError(f"{root}: dataset folder not found")

    issues: list[Issue] = []
    if task == "detection":
        items, _unlabeled = _detection_items(root, group_by=group_by, issues=issues, workers=workers,
                                             skip_errors=skip_errors)
        labels = sorted({b.label for it in items for b in it.sample.boxes} - {"face"})
        label_map = {"face": 1, **{name: k + 2 for k, name in enumerate(labels)}}
        names: list[str] = []
    else:
        items, names = _identity_items(root, group_by=group_by, issues=issues)
        label_map = {name: k for k, name in enumerate(names)}
    if not items:
        raise DatatoolError(f"{root}: no usable labeled images to split"
                            + (f" ({len(issues)} problem(s), e.g. {issues[0]})" if issues else ""))
    seen: dict[str, Path] = {}
    for it in items:
        if it.sample.image_id in seen:
            raise DatatoolError(f"{it.sample.image_path}: image_id {it.sample.image_id!r} is not unique "
                                f"(also {seen[it.sample.image_id]})")
        seen[it.sample.image_id] = it.sample.image_path
    merged = None
    if group_near_duplicates:
        items, merged = _group_near_duplicates(items, distance=near_dup_distance, issues=issues, workers=workers)

    # A unit's stratum: the most common stratum of its images (ties: alphabetical).
    unit_strata: dict[str, Counter] = defaultdict(Counter)
    for it in items:
        unit_strata[it.unit][it.stratum] += 1
    units = {u: (min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0], sum(c.values())) for u, c in unit_strata.items()}
    assignment, warnings = assign_splits(units, ratios=ratios, seed=seed)
    if task == "detection" and not any(it.sample.boxes for it in items):
        warnings.append(f"no face in any of the {len(items)} labeled image(s): every record is a negative, so a "
                        "detector cannot learn from these shards (is this the right folder?)")

    per_split: dict[str, list[SplitItem]] = {name: [] for name in SPLITS}
    for it in items:
        per_split[assignment[it.unit]].append(it)
    for name in SPLITS:  # seeded shuffled record order, independent of listing order
        per_split[name].sort(key=lambda it: _unit_order_key(seed, "record:" + it.sample.image_id))

    counts = {}
    for name in SPLITS:
        est = sum(_estimated_bytes(it, max_side) for it in per_split[name])
        counts[name] = shard_count(len(per_split[name]), est, split=name, shards=shards)
    return SplitPlan(root=root, task=task, ratios=ratios, seed=seed, group_by=group_by, max_side=max_side,
                     per_split=per_split, shard_counts=counts, label_map=label_map, names=names, issues=issues,
                     warnings=warnings, merged_units=merged,
                     near_dup_distance=near_dup_distance if group_near_duplicates else None)


def _group_near_duplicates(items: list, *, distance: int, issues: list, workers: int | None):
    """Items with the units that hold near-duplicate images merged (`core.neardup`), and how many
    units were merged. An image that does not decode is reported and keeps its unit."""
    from dataclasses import replace

    from .core.quality import hash_images

    # The bytes the plan kept for the write stage (`_Handover`) are hashed as they are: no second read.
    hashes, bad = hash_images([it.sample.image_path for it in items], data=[it.data for it in items],
                              workers=workers)
    issues.extend(bad)
    by_id = {it.sample.image_id: hashes[str(it.sample.image_path)] for it in items
             if str(it.sample.image_path) in hashes}
    units, merged = merge_near_duplicate_units({it.sample.image_id: it.unit for it in items}, by_id, distance)
    return [replace(it, unit=units[it.sample.image_id]) for it in items], merged


def shard_items(plan: SplitPlan) -> list[tuple[str, int, int, list[SplitItem]]]:
    """Which items each shard holds, in order: `(split, shard index, shard count, items)` for
    every shard of the plan. Every runner writes these shards, so they hold the same bytes."""
    shards = []
    for name in SPLITS:
        its, n = plan.per_split[name], plan.shard_counts[name]
        bounds = [round(i * len(its) / n) for i in range(n + 1)] if n else [0]
        shards.extend((name, i, n, its[bounds[i]:bounds[i + 1]]) for i in range(n))
    return shards


def write_split(plan: SplitPlan, *, out: Path, overwrite: bool = False, workers: int | None = None,
                progress: bool = True) -> SplitSummary:
    """Write a `SplitPlan`: shards (temporary names, renamed together at the end), split.csv,
    labels.txt (identity) and dataset.json."""
    from tqdm import tqdm

    from .core.tfrecord import RecordWriter

    out = Path(out)
    max_side = plan.max_side
    prepare_output_dir(out, overwrite=overwrite)
    workers = _workers(workers)
    passthrough = reencoded = 0
    written: dict[str, list[str]] = {name: [] for name in SPLITS}

    class_ids = plan.class_ids
    # One flat, ordered stream over every record so image preparation overlaps across shards.
    jobs = [(name, i, n, it) for name, i, n, its in shard_items(plan) for it in its]

    total = len(jobs)

    def prep(job):
        return record_bytes(job[3], max_side=max_side, class_ids=class_ids)

    def untouched(it):
        p = it.probe
        return p is not None and it.storable and (max_side is None or max(p.width, p.height) <= max_side)

    if all(untouched(job[3]) for job in jobs):
        workers = 1  # only file reads left: a thread pool costs more than it saves

    with contextlib.ExitStack() as stack, tqdm(total=total, desc="split", unit="img", disable=not progress) as bar:
        current, writer = None, None
        for job, (record, passed) in zip(jobs, _ordered_parallel(prep, jobs, workers=workers)):
            name, i, n, it = job
            if (name, i) != current:
                if writer is not None:
                    writer.close()
                final = out / shard_name(name, i, n)
                tmp = stack.enter_context(atomic_path(final))
                writer = RecordWriter(tmp)
                stack.callback(writer.close)
                written[name].append(final.name)
                current = (name, i)
            writer.write(record)
            passthrough += passed
            reencoded += not passed
            bar.update(1)
        if writer is not None:
            writer.close()
        # leaving the stack renames every temporary shard onto its final name (none on error)
    return finish_split(plan, out=out, written=written, passthrough=passthrough, reencoded=reencoded,
                        overwrite=overwrite)


def finish_split(plan: SplitPlan, *, out: Path, written: dict, passthrough: int, reencoded: int,
                 overwrite: bool = False, command: str | None = None, **record) -> SplitSummary:
    """What follows the shards, for every runner: stale shards dropped (`overwrite`), then
    split.csv, labels.txt (identity) and dataset.json (`record`: extra fields for it).
    `written`: split -> its shard file names."""
    root, task, per_split, label_map, names = plan.root, plan.task, plan.per_split, plan.label_map, plan.names
    issues, warnings, max_side, ratios = plan.issues, list(plan.warnings), plan.max_side, plan.ratios
    keep = {n for names_ in written.values() for n in names_}
    if overwrite:  # shards of an earlier run with other shard counts would be read as data
        for p in out.iterdir():
            if SHARD_RE.match(p.name) and p.name not in keep:
                p.unlink()

    counts = {}
    for name in SPLITS:
        its = per_split[name]
        c = {
            "images": len(its),
            "faces": sum(len(it.sample.boxes) for it in its),
            "negatives": sum(1 for it in its if not it.sample.boxes) if task == "detection" else 0,
            "groups": len({it.unit for it in its}),
        }
        if task == "identity":
            c["per_identity"] = dict(sorted(Counter(it.identity[1] for it in its).items()))
        counts[name] = c
        if not its and ratios[SPLITS.index(name)] > 0 and not any(f"'{name}'" in w for w in warnings):
            warnings.append(f"split '{name}' is empty")

    rows = []
    for name in SPLITS:
        for it in sorted(per_split[name], key=lambda it: it.sample.image_id):
            rows.append([it.sample.image_id, name, it.sample.group, it.sample.attributes.get("session", "") or "",
                         len(it.sample.boxes), it.identity[1] if it.identity else ""])
    excluded_ids = []
    for issue in issues:
        if issue.severity == "error" or issue.code == "unlabeled":
            excluded_ids.append(issue)
            rows.append([_issue_id(issue, root), "excluded", "", "", "", issue.code])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image_id", "split", "group", "session", "faces", "label"])
    w.writerows(rows)
    write_text_atomic(out / "split.csv", buf.getvalue())
    if task == "identity":
        write_text_atomic(out / "labels.txt", "".join(f"{n}\n" for n in names))

    write_record(
        out,
        command=command or command_line(),
        stage="split",
        task=task,
        source=str(root),
        seed=plan.seed,
        ratios=list(ratios),
        group_by=plan.group_by,
        max_side=max_side,
        shards=written,
        counts=counts,
        label_map=label_map,
        excluded=len(excluded_ids),
        excluded_reasons=dict(Counter(i.code for i in excluded_ids)),
        passthrough_jpegs=passthrough,
        reencoded_images=reencoded,
        near_duplicate_grouping=(None if plan.merged_units is None else
                                 {"distance": plan.near_dup_distance, "merged_units": plan.merged_units}),
        warnings=warnings,
        parent=read_record(root),
        **record,
    )
    return SplitSummary(out=out, task=task, counts=counts, shards=written, excluded=tuple(excluded_ids),
                        warnings=tuple(warnings), label_map=label_map, passthrough=passthrough,
                        reencoded=reencoded, merged_units=plan.merged_units)


def _issue_id(issue: Issue, root: Path) -> str:
    p = Path(issue.file)
    try:
        return image_key(p, root)
    except (ValueError, DatatoolError):
        return p.as_posix()


def read_split_csv(path: Path) -> list[dict]:
    """Rows of a `split.csv` as dicts (image_id, split, group, session, faces, label)."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def summary_json(summary: SplitSummary) -> str:
    return json.dumps({"out": str(summary.out), "counts": summary.counts, "warnings": list(summary.warnings)}, indent=2)
