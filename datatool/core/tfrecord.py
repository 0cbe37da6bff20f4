"""The TFRecord schema: one place that defines how a `Sample` becomes a `tf.train.Example`
and how the trainer reads it back.

Keys follow the TensorFlow Object Detection API so other tools read the files too:

- `image/encoded`: JPEG bytes, EXIF orientation already applied (TF's decoder ignores EXIF)
- `image/format`, `image/height`, `image/width`, `image/filename`
- `image/source_id`: unique per record (the sample's `image_id`)
- `image/key/sha256`: sha256 of `image/encoded`
- `image/group_id`: facekit's leakage group (sha256 of the original image)
- `image/object/bbox/{xmin,ymin,xmax,ymax}`: float lists, normalized to [0, 1]
- `image/object/class/text`, `image/object/class/label`: 1-based (0 is background, TF OD API)
- identity records add `image/class/label` (0-based line in `labels.txt`) and `image/class/text`

Shards are named `{split}-{i:05d}-of-{n:05d}.tfrecord`.

Writing needs no TensorFlow: `to_example` builds the Example with protobuf from TF's own schema
(`example_message`), and `RecordWriter` frames the records. `datatool split`, and Beam's
workers, never import TensorFlow (about 3 s and 500 MB a process). Reading stays with `tf.data`.
"""

from __future__ import annotations

import functools
import posixpath
import re
import struct
from pathlib import Path

SPLITS = ("train", "val", "test")
SHARD_RE = re.compile(r"^(?P<split>[a-z]+)-(?P<i>\d{5})-of-(?P<n>\d{5})\.tfrecord$")
BBOX_KEYS = ("image/object/bbox/xmin", "image/object/bbox/ymin", "image/object/bbox/xmax", "image/object/bbox/ymax")


def feature_spec():
    """The feature dict for `tf.io.parse_single_example` / `parse_example`."""
    import tensorflow as tf

    spec = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/format": tf.io.FixedLenFeature([], tf.string, default_value=b"jpeg"),
        "image/height": tf.io.FixedLenFeature([], tf.int64),
        "image/width": tf.io.FixedLenFeature([], tf.int64),
        "image/filename": tf.io.FixedLenFeature([], tf.string, default_value=b""),
        "image/source_id": tf.io.FixedLenFeature([], tf.string, default_value=b""),
        "image/key/sha256": tf.io.FixedLenFeature([], tf.string, default_value=b""),
        "image/group_id": tf.io.FixedLenFeature([], tf.string, default_value=b""),
        "image/object/class/text": tf.io.VarLenFeature(tf.string),
        "image/object/class/label": tf.io.VarLenFeature(tf.int64),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
        "image/class/text": tf.io.FixedLenFeature([], tf.string, default_value=b""),
    }
    for key in BBOX_KEYS:
        spec[key] = tf.io.VarLenFeature(tf.float32)
    return spec


def to_example(sample, encoded: bytes, *, width: int, height: int, image_format: str = "jpeg",
               class_ids: dict[str, int] | None = None, identity: tuple[int, str] | None = None,
               sha256: str | None = None):
    """A `tf.train.Example` for one sample (the same message, built by `example_message`).

    `encoded` holds the image bytes exactly as stored; `width`/`height` are of those pixels
    (which differ from `sample.width/height` when the image was downscaled: boxes are
    normalized, so they need no rescaling). Boxes are written normalized to [0, 1] as
    `[xmin, ymin, xmax, ymax]`, clipped. `class_ids` maps labels to 1-based ids
    (default: every label is 1). `identity` is `(0-based label, name)` for identity data.
    """
    import hashlib

    def b(values):
        return "bytes_list", values

    def f(values):
        return "float_list", values

    def i(values):
        return "int64_list", values

    sw, sh = float(sample.width), float(sample.height)
    xmin, ymin, xmax, ymax, texts, labels = [], [], [], [], [], []
    for box in sample.boxes:
        xmin.append(min(max(box.x_min / sw, 0.0), 1.0))
        ymin.append(min(max(box.y_min / sh, 0.0), 1.0))
        xmax.append(min(max(box.x_max / sw, 0.0), 1.0))
        ymax.append(min(max(box.y_max / sh, 0.0), 1.0))
        texts.append(box.label.encode("utf-8"))
        labels.append(int(class_ids[box.label]) if class_ids else 1)
    features = {
        "image/encoded": b([encoded]),
        "image/format": b([image_format.encode()]),
        "image/height": i([int(height)]),
        "image/width": i([int(width)]),
        "image/filename": b([posixpath.basename(sample.image_id).encode("utf-8")]),  # keys are POSIX paths
        "image/source_id": b([sample.image_id.encode("utf-8")]),
        "image/key/sha256": b([(sha256 or hashlib.sha256(encoded).hexdigest()).encode()]),
        "image/group_id": b([sample.group.encode("utf-8")]),
        "image/object/bbox/xmin": f(xmin),
        "image/object/bbox/ymin": f(ymin),
        "image/object/bbox/xmax": f(xmax),
        "image/object/bbox/ymax": f(ymax),
        "image/object/class/text": b(texts),
        "image/object/class/label": i(labels),
    }
    if identity is not None:
        features["image/class/label"] = i([int(identity[0])])
        features["image/class/text"] = b([identity[1].encode("utf-8")])
    example = example_message()()
    for key, (kind, values) in features.items():
        getattr(example.features.feature[key], kind).value.extend(values)
    return example


@functools.cache
def example_message():
    """The class of `tf.train.Example`, built by protobuf without importing TensorFlow.

    The schema is TensorFlow's (tensorflow/core/example/example.proto and feature.proto): the
    same package, message names, field numbers and packed float and int64 lists. So
    `SerializeToString(deterministic=True)` gives the bytes `tf.train.Example` gives;
    tests/test_split.py compares them. It lives in a pool of its own, so a process that later
    imports TensorFlow has no clash. The schema is written out here because the only published
    copy of the compiled module is inside the tensorflow package, and importing that imports all
    of TensorFlow.
    """
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="facekit/tf_example.proto", package="tensorflow",
                                              syntax="proto3")

    def message(name, fields, *, oneof=None):
        m = file.message_type.add(name=name)
        if oneof:
            m.oneof_decl.add(name=oneof)
        for number, (fname, label, ftype, type_name) in enumerate(fields, start=1):
            f = m.field.add(name=fname, number=number, label=label, type=ftype)
            if type_name:
                f.type_name = type_name
            if ftype in (field.TYPE_FLOAT, field.TYPE_INT64):
                f.options.packed = True
            if oneof:
                f.oneof_index = 0
        return m

    rep, opt = field.LABEL_REPEATED, field.LABEL_OPTIONAL
    message("BytesList", [("value", rep, field.TYPE_BYTES, None)])
    message("FloatList", [("value", rep, field.TYPE_FLOAT, None)])
    message("Int64List", [("value", rep, field.TYPE_INT64, None)])
    message("Feature", [("bytes_list", opt, field.TYPE_MESSAGE, ".tensorflow.BytesList"),
                        ("float_list", opt, field.TYPE_MESSAGE, ".tensorflow.FloatList"),
                        ("int64_list", opt, field.TYPE_MESSAGE, ".tensorflow.Int64List")], oneof="kind")
    features = message("Features", [("feature", rep, field.TYPE_MESSAGE, ".tensorflow.Features.FeatureEntry")])
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, label=opt, type=field.TYPE_STRING)
    entry.field.add(name="value", number=2, label=opt, type=field.TYPE_MESSAGE, type_name=".tensorflow.Feature")
    message("Example", [("features", opt, field.TYPE_MESSAGE, ".tensorflow.Features")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))


def example_bytes(sample, encoded: bytes, **kwargs) -> bytes:
    """`to_example(sample, encoded, **kwargs)` serialized, the same bytes in every process.

    Protobuf leaves the order of map entries (`Features.feature` is a map) to the process's
    hashing, so a plain `SerializeToString()` differs from run to run; `deterministic=True`
    sorts them, which keeps "same seed, same bytes" true for the shards.
    """
    return to_example(sample, encoded, **kwargs).SerializeToString(deterministic=True)


def _masked_crc(data: bytes) -> bytes:
    import google_crc32c

    crc = google_crc32c.value(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def frame_record(record: bytes) -> bytes:
    """One record as a TFRecord file holds it (uncompressed): the length (uint64, little-endian),
    its masked CRC-32C, the bytes, their masked CRC-32C. Framed records concatenate into a valid
    file, which is how Beam's split builds a shard from parts.

    Written here, on google-crc32c, so that writing shards needs no TensorFlow; tests check that
    `tf.data` reads the files and that the bytes equal `tf.io.TFRecordWriter`'s.
    """
    length = struct.pack("<Q", len(record))
    return length + _masked_crc(length) + record + _masked_crc(record)


class RecordWriter:
    """A TFRecord file of `frame_record`s, written without TensorFlow."""

    def __init__(self, path):
        self._file = open(path, "wb")

    def write(self, record: bytes) -> None:
        self._file.write(frame_record(record))

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def parse_example(serialized):
    """Parse one serialized Example (a scalar string tensor; use inside `tf.data.map`).

    Returns a dict of tensors:
    - `encoded` (string), `height`, `width` (int64), `source_id`, `group_id`, `filename` (string)
    - `boxes`: float32 `(num_boxes, 4)`, `[xmin, ymin, xmax, ymax]` normalized to [0, 1]
    - `box_labels` int64 `(num_boxes,)` 1-based, `box_texts` string `(num_boxes,)`
    - `class_label` int64 scalar (-1 if not an identity record), `class_text` string
    """
    import tensorflow as tf

    p = tf.io.parse_single_example(serialized, feature_spec())
    boxes = tf.stack([tf.sparse.to_dense(p[k]) for k in BBOX_KEYS], axis=-1)
    return {
        "encoded": p["image/encoded"],
        "height": p["image/height"],
        "width": p["image/width"],
        "source_id": p["image/source_id"],
        "group_id": p["image/group_id"],
        "filename": p["image/filename"],
        "boxes": tf.reshape(boxes, [-1, 4]),
        "box_labels": tf.sparse.to_dense(p["image/object/class/label"]),
        "box_texts": tf.sparse.to_dense(p["image/object/class/text"], default_value=b""),
        "class_label": p["image/class/label"],
        "class_text": p["image/class/text"],
    }


def decode_image(encoded, channels: int = 3):
    """JPEG/PNG bytes -> uint8 `(height, width, 3)` tensor."""
    import tensorflow as tf

    img = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
    img.set_shape([None, None, channels])
    return img


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def list_shards(tfdir: Path, split: str) -> list[Path]:
    """The shards of one split in `tfdir`, sorted (ignores temporary files)."""
    out = []
    for p in sorted(Path(tfdir).glob(f"{split}-*-of-*.tfrecord")):
        m = SHARD_RE.match(p.name)
        if m and m.group("split") == split:
            out.append(p)
    return out


def shard_records(shard: Path):
    """`(index, serialized record)` for every record of one shard file, in order. A truncated or
    corrupt file ends with one `(index, error)`, the `tf.errors.OpError` met where reading stopped
    (nothing after it can be read), so a caller can name the shard and the record and keep the rest."""
    import tensorflow as tf

    records = iter(tf.data.TFRecordDataset(str(shard)))
    index = 0
    while True:
        try:
            raw = next(records)
        except StopIteration:
            return
        except tf.errors.OpError as e:
            yield index, e
            return
        yield index, raw
        index += 1
