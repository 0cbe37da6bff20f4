"""tf.data pipelines over the facekit TFRecord schema (`datatool.core.tfrecord`), what a TFDIR says
about itself (task, counts, a content hash for `config.json`), and the one resize from an image
to a model's input (`resize_images`), used by the pipeline and by every predictor alike.

Targets come from the task's head (`trainer.tasks`): a function from one parsed record to a dict
of tensors. The default, `box_targets`, is the one-box head's, per image:
- `presence`: 1.0 if the record has at least one box, else 0.0
- `box`: the *largest* box, `[x_min, y_min, x_max, y_max]` normalized to [0, 1]; negatives get
  `NO_BOX` (-1, -1, -1, -1), which the localization loss and IoU metric mask out. A one-box model
  learns the largest face of a multi-face image.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from datatool.core.errors import DatatoolError
from datatool.core.fsutil import read_record
from datatool.core.tfrecord import SPLITS, decode_image, list_shards, parse_example

TASKS = ("detection", "identity")  # the kinds of records `datatool split` writes
NO_BOX = (-1.0, -1.0, -1.0, -1.0)
# The training shuffle's block: records are permuted within consecutive blocks of this many
# (`shuffle_records`). `trainer.feature_cache` replays the same shuffle over its stored batches.
SHUFFLE_BUFFER = 2048


class DataError(DatatoolError):
    """A TFDIR that cannot be read: no shards, an unknown task, a corrupt record."""


def dataset_info(tfdir: Path) -> dict:
    """The `dataset.json` that `datatool split` wrote into TFDIR ({} when missing or unreadable)."""
    return read_record(Path(tfdir)) or {}


def shards(tfdir: Path, split: str) -> list[Path]:
    """The shards of `split`, or a `DataError` that says what is in TFDIR instead."""
    tfdir = Path(tfdir)
    if not tfdir.is_dir():
        raise DataError(f"{tfdir}: no such folder (expected the --out folder of `datatool split`)")
    found = list_shards(tfdir, split)
    if not found:
        present = [s for s in SPLITS if list_shards(tfdir, s)]
        raise DataError(f"{tfdir}: no '{split}' shards ({split}-00000-of-0000N.tfrecord); "
                        f"splits present: {', '.join(present) or 'none'}")
    return found


def peek_task(tfdir: Path) -> str:
    """Task guessed from the first record: identity records carry `image/class/label` >= 0."""
    import tensorflow as tf

    for split in SPLITS:
        files = list_shards(Path(tfdir), split)
        if not files:
            continue
        try:
            for raw in tf.data.TFRecordDataset([str(f) for f in files]).take(1):
                label = int(parse_example(raw)["class_label"].numpy())
                return "identity" if label >= 0 else "detection"
        except tf.errors.OpError as e:
            raise DataError(f"{files[0]}: unreadable TFRecord ({e.message.splitlines()[0]})") from e
    raise DataError(f"{tfdir}: no TFRecord shards found (expected train-00000-of-0000N.tfrecord ...)")


def read_task(tfdir: Path) -> str:
    """The task of a TFDIR: `dataset.json`'s `task`, else guessed from a record."""
    task = dataset_info(tfdir).get("task")
    if task is None:
        return peek_task(tfdir)
    if task not in TASKS:
        raise DataError(f"{Path(tfdir) / 'dataset.json'}: task: unknown value {task!r} (expected one of {TASKS})")
    return task


def read_labels(tfdir: Path) -> list[str]:
    """`labels.txt` of an identity TFDIR (one name per line, line i is class i); [] if absent."""
    path = Path(tfdir) / "labels.txt"
    if not path.is_file():
        return []
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def record_hash(tfdir: Path) -> str:
    """sha256 over every shard's name and bytes (all splits) - identifies the exact training data."""
    h = hashlib.sha256()
    for split in SPLITS:
        for f in list_shards(Path(tfdir), split):
            h.update(f.name.encode())
            with open(f, "rb") as fh:
                while block := fh.read(1 << 20):
                    h.update(block)
    return h.hexdigest()


def count_records(tfdir: Path, split: str) -> int:
    """Number of records in a split (counts them; cheap next to training)."""
    import tensorflow as tf

    files = [str(f) for f in shards(tfdir, split)]
    try:
        return int(tf.data.TFRecordDataset(files).reduce(0, lambda n, _: n + 1).numpy())
    except tf.errors.OpError as e:
        raise DataError(f"{tfdir}: {split} shards: unreadable TFRecord ({e.message.splitlines()[0]})") from e


def detection_targets(boxes):
    """`boxes` float32 `(n, 4)` normalized xyxy -> `(presence (1,), box (4,))`, box = the largest."""
    import tensorflow as tf

    n = tf.shape(boxes)[0]

    def largest():
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        return tf.gather(boxes, tf.argmax(area, output_type=tf.int32))

    box = tf.cond(n > 0, largest, lambda: tf.constant(NO_BOX, tf.float32))
    presence = tf.cast(n > 0, tf.float32)[None]
    return presence, tf.reshape(box, [4])


def box_targets(record) -> dict:
    """The one-box head's targets from a parsed record: `{"presence": (1,), "box": (4,)}`."""
    presence, box = detection_targets(record["boxes"])
    return {"presence": presence, "box": box}


def resize_images(images, image_size):
    """uint8/float images `(..., h, w, 3)` -> float32 0-255 at `image_size` (an int: square, or
    `(height, width)`), bilinear. A plain resize: normalized boxes need no change.

    The one resize between an image and a model: the training pipeline uses it, and so do
    `trainer.detector.RunDetector` and the recognizer, so a model sees at predict time what it
    saw in training."""
    import tensorflow as tf

    hw = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    return tf.image.resize(tf.cast(images, tf.float32), hw, method="bilinear")


def model_input(frames, image_size):
    """A batch `(n, h, w, 3)` float32 0-255 from RGB frames of any sizes (`resize_images` each)."""
    import numpy as np
    import tensorflow as tf

    return tf.stack([resize_images(np.asarray(f), image_size) for f in frames])


def epoch_variable(first: int = 0):
    """The epoch a training pipeline shuffles for (`make_dataset(epoch=...)`): a `tf.Variable`
    the pipeline reads when an epoch's iterator starts. `trainer.fit` sets it at the start of
    every epoch; create it outside any `tf.distribute` scope (it is the input's, not a model's)."""
    import tensorflow as tf

    with tf.init_scope():
        return tf.Variable(int(first), dtype=tf.int64, trainable=False, name="data_epoch")


def shuffle_records(ds, *, seed: int, epoch=0):
    """`ds` (one element per record) shuffled for `epoch` (an int, or an `epoch_variable`): each
    block of `SHUFFLE_BUFFER` consecutive elements permuted with a stateless seed made of
    (`seed`, epoch, block index).

    Written here rather than `Dataset.shuffle(reshuffle_each_iteration=True)`: that draws each
    epoch's order from a seed generator that advances with every iterator, so a resumed fit (a
    new process starting at epoch k) would replay epoch 0's order. Here an epoch's order is a pure
    function of (seed, epoch, position): a resumed fit sees the batches an uninterrupted one saw,
    workers sharing the records out agree on it, and `trainer.feature_cache` replays it over row
    indices (the permutation depends only on positions, never on the elements)."""
    import tensorflow as tf

    def permute(block_index, block):
        e = tf.cast(tf.convert_to_tensor(epoch), tf.int64)  # read per block: the epoch running now
        key = tf.random.experimental.stateless_fold_in(tf.stack([tf.constant(seed, tf.int64), e]), block_index)
        n = tf.shape(block, out_type=tf.int64)[0]
        return tf.gather(block, tf.random.experimental.stateless_shuffle(tf.range(n), seed=key))

    return ds.batch(SHUFFLE_BUFFER).enumerate().map(permute).unbatch()


def make_dataset(tfdir: Path, split: str, *, image_size: int, batch_size: int, targets=box_targets,
                 shuffle: bool = False, seed: int = 0, epoch=0, shard: tuple[int, int] | None = None,
                 with_meta: bool = False):
    """`split` of TFDIR as batches of `(images, targets)`: images float32 0-255 `(b, s, s, 3)`.

    `targets(parsed record) -> {output name: tensor}`, the task's (`trainer.tasks.Task.targets`);
    default the one-box head's `box_targets` (see the module docstring).
    shards -> interleaved records -> shuffle (train) -> parse -> decode -> resize -> batch ->
    prefetch. The order is a pure function of `seed` and `epoch` (an int, or an `epoch_variable`
    that the fit advances; see `shuffle_records`), with deterministic interleave and maps.
    `with_meta` adds a third element: `{"source_id", "boxes" (ragged, normalized), "width", "height"}`.

    `shard=(workers, index)`: this worker's share of a multi-worker `tf.distribute` fit, by shard
    file where there are enough files, else by record (`sharding`). Done here, on the file list,
    with tf.data's auto-sharding turned off (`AutoShardPolicy.OFF`): its `FILE` rewrite refuses a
    pipeline holding a `Dataset.range`, as `shuffle_records` does."""
    import tensorflow as tf

    files = [str(f) for f in shards(tfdir, split)]
    workers, index = shard if shard is not None else (1, 0)
    by_file = workers > 1 and sharding(tfdir, split, workers) == "file"
    ds = tf.data.Dataset.from_tensor_slices(files)
    if by_file:
        ds = ds.shard(workers, index)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(files)), block_length=16,
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if shuffle:
        ds = shuffle_records(ds, seed=seed, epoch=epoch)
    if workers > 1 and not by_file:  # after the shuffle: every worker has the same order, so shares are disjoint
        ds = ds.shard(workers, index)

    def load(raw):
        p = parse_example(raw)
        image = resize_images(decode_image(p["encoded"]), image_size)
        if with_meta:
            meta = {"source_id": p["source_id"], "boxes": p["boxes"],
                    "width": p["width"], "height": p["height"]}
            return image, targets(p), meta
        return image, targets(p)

    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ragged_batch(batch_size) if with_meta else ds.batch(batch_size)
    if shard is not None:
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        ds = ds.with_options(options)
    return ds.prefetch(tf.data.AUTOTUNE)


def sharding(tfdir: Path, split: str, workers: int) -> str:
    """How `workers` processes share `split` out (`make_dataset(shard=...)`): `"file"`, each
    reads its own shard files, when there are at least as many files as workers; else
    `"record"`, each reads every file and keeps every `workers`-th record of the same order."""
    return "file" if workers <= 1 or len(shards(tfdir, split)) >= workers else "record"


def describe_tfdir(tfdir: Path) -> dict:
    """Task, label map and per-split counts (the part of `config.json` that is about data)."""
    info = dataset_info(tfdir)
    task = read_task(tfdir)
    counts = {s: count_records(tfdir, s) for s in SPLITS if list_shards(Path(tfdir), s)}
    # an identity TFDIR names its people in labels.txt; detection records have one class
    labels = read_labels(tfdir) if task == "identity" else ["face"]
    return {"tfdir": str(Path(tfdir).resolve()), "task": task, "counts": counts,
            "record_sha256": record_hash(tfdir), "dataset_json": info or None, "labels": labels}


def dumps(obj) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False)
