"""Read a TFDIR back through the TFRecord schema (with tf.data), exactly as the trainer will.

`inspect_tfrecords` counts records per split (faces, negatives, identities, groups), checks
that every record parses and its image decodes to the size it claims with boxes inside
[0, 1], and that no group id appears in two splits (leakage). `draw_tfrecord_grid` draws a
sample of records with boxes decoded from the files.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .core.errors import DatatoolError
from .core.neardup import DEFAULT_DISTANCE, check_distance, tfrecord_leaks
from .core.tfrecord import SPLITS, list_shards


@dataclass(frozen=True)
class BadRecord:
    """A record that failed to parse or decode: shard file, 0-based index in it, and why."""

    shard: str
    index: int
    message: str

    def __str__(self) -> str:
        return f"{self.shard}: record {self.index}: {self.message}"


@dataclass
class SplitCounts:
    records: int = 0
    faces: int = 0
    negatives: int = 0
    identities: Counter = field(default_factory=Counter)
    shards: list = field(default_factory=list)
    groups: set = field(default_factory=set)

    def to_dict(self) -> dict:
        return {"records": self.records, "faces": self.faces, "negatives": self.negatives,
                "groups": len(self.groups), "identities": dict(sorted(self.identities.items())),
                "shards": self.shards}


@dataclass
class InspectReport:
    """What `inspect_tfrecords` found. `ok` is False when any record is bad or a group leaks."""

    tfdir: Path
    splits: dict = field(default_factory=dict)  # split -> SplitCounts
    bad: list = field(default_factory=list)  # [BadRecord]
    leaked_groups: dict = field(default_factory=dict)  # group id -> [splits]
    duplicate_ids: list = field(default_factory=list)
    labels: list = field(default_factory=list)  # labels.txt lines, if any
    near_duplicate_leaks: list = field(default_factory=list)  # [core.neardup.Leak]: val/test images close to train
    near_dup_distance: int | None = None  # None: not checked

    @property
    def ok(self) -> bool:
        return not self.bad and not self.leaked_groups and not self.duplicate_ids

    def to_dict(self) -> dict:
        return {
            "tfdir": str(self.tfdir),
            "ok": self.ok,
            "splits": {k: v.to_dict() for k, v in self.splits.items()},
            "bad_records": [{"shard": b.shard, "index": b.index, "message": b.message} for b in self.bad],
            "leaked_groups": self.leaked_groups,
            "duplicate_source_ids": self.duplicate_ids,
            "labels": self.labels,
            "near_dup_distance": self.near_dup_distance,
            "near_duplicate_leaks": [lk.to_dict() for lk in self.near_duplicate_leaks],
        }


def _check_graph(serialized):
    """Parse one record with the schema, decode its image, and return what is counted and checked
    (graph code, used inside `tf.data.map`)."""
    import tensorflow as tf

    from .core.tfrecord import decode_image, parse_example

    p = parse_example(serialized)
    img = decode_image(p["encoded"])
    boxes = p["boxes"]
    shape = tf.cast(tf.shape(img)[:2], tf.int64)
    in_range = tf.reduce_all(tf.math.is_finite(boxes)) & tf.reduce_all(boxes >= 0.0) & tf.reduce_all(boxes <= 1.0)
    ordered = tf.reduce_all(boxes[:, 2] >= boxes[:, 0]) & tf.reduce_all(boxes[:, 3] >= boxes[:, 1])
    return {
        "decoded_hw": shape,
        "hw": tf.stack([p["height"], p["width"]]),
        "boxes_in_range": in_range,
        "boxes_ordered": ordered,
        "num_boxes": tf.shape(boxes)[0],
        "class_label": p["class_label"],
        "class_text": p["class_text"],
        "group_id": p["group_id"],
        "source_id": p["source_id"],
    }


def _problem(r: dict) -> str | None:
    (h, w), (hh, ww) = (int(v) for v in r["decoded_hw"]), (int(v) for v in r["hw"])
    if (h, w) != (hh, ww):
        return f"image decodes to {w}x{h} but image/width, image/height say {ww}x{hh}"
    if not bool(r["boxes_in_range"]):
        return "image/object/bbox: values outside [0, 1]"
    if not bool(r["boxes_ordered"]):
        return "image/object/bbox: xmax < xmin or ymax < ymin"
    return None


def _op_message(e) -> str:
    """The line of a TensorFlow error that says what is wrong (not the graph trace around it)."""
    import re

    lines = [ln.strip() for ln in str(getattr(e, "message", e)).splitlines()]
    skip = ("File ", "[[", "Detected at node", "Graph execution error", "(most recent call last)")
    useful = [ln for ln in lines if ln and not ln.startswith(skip)]
    text = useful[-1] if useful else (lines[0] if lines else type(e).__name__)
    return re.sub(r"\s*\[Op:[^\]]*\]$", "", text)


def _shard_results(shard: Path, check) -> tuple[list[dict], list[BadRecord]]:
    """Every record's check result. Fast path: one parallel tf.data pipeline; if anything in the
    shard fails, read it again record by record to name the bad ones by index."""
    import tensorflow as tf

    try:
        ds = (tf.data.TFRecordDataset(str(shard)).map(_check_graph, num_parallel_calls=tf.data.AUTOTUNE,
                                                      deterministic=True).batch(256))
        results = []
        for batch in ds:
            batch = {k: v.numpy() for k, v in batch.items()}
            for i in range(len(batch["num_boxes"])):
                results.append({k: v[i] for k, v in batch.items()})
        return results, []
    except tf.errors.OpError:
        pass
    results, bad = [], []
    it = iter(tf.data.TFRecordDataset(str(shard)))
    index = 0
    while True:
        try:
            serialized = next(it)
        except StopIteration:
            break
        except tf.errors.OpError as e:  # truncated / corrupt file: the rest is unreadable
            bad.append(BadRecord(shard.name, index, f"unreadable from here on ({_op_message(e)})"))
            break
        try:
            r = {k: v.numpy() for k, v in check(serialized).items()}
        except tf.errors.OpError as e:
            bad.append(BadRecord(shard.name, index, _op_message(e)))
            r = None
        results.append(r)
        index += 1
    return results, bad


def inspect_tfrecords(tfdir: Path, *, progress: bool = True,
                      near_dup_distance: int | None = DEFAULT_DISTANCE) -> InspectReport:
    """Read every shard of every split in `tfdir` through `datatool.core.tfrecord` with tf.data.

    With `near_dup_distance` (bits; None = off), also list every val/test record whose image is a
    near duplicate of a train record's, whatever their groups or sessions (`near_duplicate_leaks`;
    they do not make the report fail: `inspect --strict` does).
    """
    if near_dup_distance is not None:
        check_distance(near_dup_distance)
    import tensorflow as tf
    from tqdm import tqdm

    tfdir = Path(tfdir)
    if not tfdir.is_dir():
        raise DatatoolError(f"{tfdir}: TFRecord folder not found")
    shards = {name: list_shards(tfdir, name) for name in SPLITS}
    if not any(shards.values()):
        raise DatatoolError(f"{tfdir}: no {{train,val,test}}-NNNNN-of-NNNNN.tfrecord shards (made by `datatool split`)")
    report = InspectReport(tfdir=tfdir)
    labels_txt = tfdir / "labels.txt"
    if labels_txt.is_file():
        report.labels = [ln.strip() for ln in labels_txt.read_text(encoding="utf-8").splitlines() if ln.strip()]
    check = tf.function(_check_graph, input_signature=[tf.TensorSpec([], tf.string)])
    group_splits: dict[str, set] = defaultdict(set)
    source_ids: Counter = Counter()
    n_shards = sum(len(v) for v in shards.values())
    with tqdm(total=n_shards, desc="inspect", unit="shard", disable=not progress) as bar:
        for name in SPLITS:
            counts = report.splits.setdefault(name, SplitCounts())
            for shard in shards[name]:
                counts.shards.append(shard.name)
                results, bad = _shard_results(shard, check)
                report.bad.extend(bad)
                for index, r in enumerate(results):
                    if r is None:
                        continue
                    problem = _problem(r)
                    if problem:
                        report.bad.append(BadRecord(shard.name, index, problem))
                    n_boxes = int(r["num_boxes"])
                    counts.records += 1
                    counts.faces += n_boxes
                    label = int(r["class_label"])
                    if label >= 0:
                        counts.identities[bytes(r["class_text"]).decode("utf-8", "replace") or str(label)] += 1
                    elif n_boxes == 0:
                        counts.negatives += 1
                    group = bytes(r["group_id"]).decode("utf-8", "replace")
                    if group:
                        counts.groups.add(group)
                        group_splits[group].add(name)
                    source_ids[bytes(r["source_id"]).decode("utf-8", "replace")] += 1
                bar.update(1)
    report.bad.sort(key=lambda b: (b.shard, b.index))
    report.leaked_groups = {g: sorted(s, key=SPLITS.index) for g, s in sorted(group_splits.items()) if len(s) > 1}
    report.duplicate_ids = sorted(k for k, v in source_ids.items() if v > 1 and k)
    if near_dup_distance is not None:
        report.near_dup_distance = near_dup_distance
        report.near_duplicate_leaks = tfrecord_leaks(tfdir, near_dup_distance)  # bad records: listed above
    return report


def read_records(tfdir: Path, *, split: str | None = None):
    """Yield `(split, parsed_dict, rgb_uint8)` for every record, decoded with the schema via tf.data."""
    import tensorflow as tf

    from .core.tfrecord import decode_image, parse_example

    for name in ([split] if split else SPLITS):
        files = [str(p) for p in list_shards(Path(tfdir), name)]
        if not files:
            continue
        ds = tf.data.TFRecordDataset(files).map(parse_example).map(lambda p: (p, decode_image(p["encoded"])))
        for parsed, img in ds:
            yield name, parsed, img.numpy()


def draw_tfrecord_grid(tfdir: Path, path: Path, *, n: int = 16, seed: int = 0, cell: int = 256) -> int:
    """Save a contact sheet of up to `n` records spread over the splits, boxes drawn from the files.

    Records are picked by a seeded random choice per split (proportional to split sizes, at
    least one per non-empty split). Returns the number of records drawn.
    """
    import cv2
    import numpy as np
    import tensorflow as tf

    from .core.draw import contact_sheet, draw_boxes, save_rgb
    from .core.tfrecord import decode_image, parse_example

    tfdir = Path(tfdir)
    rng = np.random.default_rng(seed)
    sizes = {}
    for name in SPLITS:
        files = [str(p) for p in list_shards(tfdir, name)]
        sizes[name] = sum(1 for _ in tf.data.TFRecordDataset(files)) if files else 0
    total = sum(sizes.values())
    if total == 0:
        raise DatatoolError(f"{tfdir}: no records to draw")
    n = max(1, min(n, total))
    want = {k: (max(1, round(n * v / total)) if v else 0) for k, v in sizes.items()}
    while sum(want.values()) > n:
        want[max(want, key=lambda s: want[s])] -= 1
    while sum(want.values()) < n:  # rounding left a slot: give it to the split with most to spare
        want[max(want, key=lambda s: sizes[s] - want[s])] += 1
    images, titles = [], []
    for name in SPLITS:
        if not want[name]:
            continue
        picks = set(rng.choice(sizes[name], size=min(want[name], sizes[name]), replace=False).tolist())
        files = [str(p) for p in list_shards(tfdir, name)]
        ds = tf.data.TFRecordDataset(files).enumerate().filter(
            lambda i, _s: tf.reduce_any(tf.equal(i, tf.constant(sorted(picks), tf.int64))))
        for _i, serialized in ds:
            p = parse_example(serialized)
            img = decode_image(p["encoded"]).numpy()
            h, w = img.shape[:2]
            scale = cell / max(h, w)  # draw at the size shown, so thin lines and captions stay legible
            h, w = max(1, round(h * scale)), max(1, round(w * scale))
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST)
            boxes = p["boxes"].numpy() * np.array([w, h, w, h], np.float32)
            texts = [t.decode("utf-8", "replace") for t in p["box_texts"].numpy()]
            img = draw_boxes(img, [tuple(b) for b in boxes], captions=texts)
            title = f"{name}: {p['filename'].numpy().decode('utf-8', 'replace')}"
            if int(p["class_label"]) >= 0:
                title = f"{name}: {p['class_text'].numpy().decode('utf-8', 'replace')}"
            images.append(img)
            titles.append(title)
    save_rgb(path, contact_sheet(images, titles=titles, cell=cell))
    return len(images)
