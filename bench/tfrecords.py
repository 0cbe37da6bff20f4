"""Benchmark: writing TFRecords with `datatool split` vs a bare loop, and reading them back
against how fast MobileNetV2 training consumes images - all measured in one run.

    .venv/bin/python bench/tfrecords.py [--images 600] [--repeat 3] [--batch 32]

1. Generates N 640x480 webcam-like JPEGs with a labelme box each (every 5th a negative).
2. Write, end to end: `datatool.split.split` (reading the labelme folder through
   `load_dataset`, header and size checks, hashing, grouping, stratifying, split.csv,
   dataset.json) vs the loop the seed projects write by hand: for each JSON, read it, read
   the image bytes, build a `tf.train.Example` with the same keys, `tf.io.TFRecordWriter`.
   Write stage only: `write_split` of one `plan_split` vs a bare loop writing the same
   Examples (same bytes) to one file. Ratios = bare time / facekit time (goal >= 0.9x).
3. Read: the trainer's input pipeline (`trainer.data.make_dataset`: interleave -> parse ->
   decode -> resize to 224 -> batch -> prefetch; an equivalent chain on `datatool.core.tfrecord` if
   trainer/data.py is absent) in images/s, against MobileNetV2 (224, weights=None, frozen
   backbone, a small trainable head) `train_on_batch` images/s on random batches (goal: the
   pipeline several times faster than training consumes).

Each figure is the best of --repeat runs: the machine may be shared with other work, so
absolute numbers move; the ratios are measured side by side in the same process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_dataset(root: Path, n: int) -> None:
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    images = root / "images"
    images.mkdir(parents=True)
    yy, xx = np.mgrid[0:480, 0:640]
    base = ((xx / 640 * 120) + (yy / 480 * 60)).astype(np.uint8)
    for k in range(n):
        img = np.dstack([base, base[::-1], base[:, ::-1]]) + rng.integers(0, 40, (480, 640, 3), dtype=np.uint8)
        shapes = []
        if k % 5:
            side = int(rng.integers(80, 240))
            x0, y0 = int(rng.integers(0, 640 - side)), int(rng.integers(0, 480 - side))
            cv2.ellipse(img, (x0 + side // 2, y0 + side // 2), (side // 2, side // 2 + 10), 0, 0, 360,
                        (170, 190, 230), -1)
            shapes.append({"label": "face", "points": [[x0, y0], [x0 + side, y0 + side]], "group_id": None,
                           "description": "", "shape_type": "rectangle", "flags": {}, "mask": None})
        name = f"frame_{k:05d}.jpg"
        cv2.imwrite(str(images / name), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        (images / f"frame_{k:05d}.json").write_text(json.dumps({
            "version": "6.3.1", "flags": {}, "shapes": shapes, "imagePath": name, "imageData": None,
            "imageHeight": 480, "imageWidth": 640}))


def bare_loop(src: Path, out: Path) -> None:
    """The hand-written loop: JSON -> Example with the same image bytes -> one TFRecord file."""
    import hashlib

    import tensorflow as tf

    def b(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=v))

    def f(v):
        return tf.train.Feature(float_list=tf.train.FloatList(value=v))

    def i(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=v))

    out.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(out / "train.tfrecord")) as writer:
        for jp in sorted((src / "images").glob("*.json")):
            data = json.loads(jp.read_text())
            encoded = (jp.parent / data["imagePath"]).read_bytes()
            w, h = data["imageWidth"], data["imageHeight"]
            pts = [s["points"] for s in data["shapes"]]
            feature = {
                "image/encoded": b([encoded]), "image/format": b([b"jpeg"]),
                "image/height": i([h]), "image/width": i([w]),
                "image/filename": b([data["imagePath"].encode()]), "image/source_id": b([data["imagePath"].encode()]),
                "image/key/sha256": b([hashlib.sha256(encoded).hexdigest().encode()]),
                "image/object/bbox/xmin": f([p[0][0] / w for p in pts]),
                "image/object/bbox/ymin": f([p[0][1] / h for p in pts]),
                "image/object/bbox/xmax": f([p[1][0] / w for p in pts]),
                "image/object/bbox/ymax": f([p[1][1] / h for p in pts]),
                "image/object/class/text": b([b"face"] * len(pts)),
                "image/object/class/label": i([1] * len(pts)),
            }
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def bare_write(plan, out: Path) -> None:
    """The same records as `write_split(plan)` (same bytes, same Example), in one bare loop."""
    import tensorflow as tf

    from datatool.core.tfrecord import to_example

    out.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(out / "all.tfrecord")) as writer:
        for items in plan.per_split.values():
            for it in items:
                data = it.sample.image_path.read_bytes()
                ex = to_example(it.sample, data, width=it.probe.width, height=it.probe.height,
                                class_ids=plan.label_map)
                writer.write(ex.SerializeToString())


def best_of(repeat: int, runs: dict) -> dict:
    """Run each named callable `repeat` times, interleaved (fair under shared-CPU noise); best times."""
    times = {name: [] for name in runs}
    for r in range(repeat):
        for name, fn in runs.items():
            t = time.perf_counter()
            fn(r)
            times[name].append(time.perf_counter() - t)
    return {name: min(v) for name, v in times.items()}


def read_pipeline(tfdir: Path, batch: int):
    """The trainer's pipeline if trainer/data.py exists, else the same chain built here."""
    try:
        from trainer.data import make_dataset as trainer_dataset

        return trainer_dataset(tfdir, "train", image_size=224, batch_size=batch), "trainer.data.make_dataset"
    except ImportError:
        import tensorflow as tf

        from datatool.core.tfrecord import decode_image, list_shards, parse_example

        files = [str(p) for p in list_shards(tfdir, "train")]

        def load(raw):
            p = parse_example(raw)
            img = tf.image.resize(tf.cast(decode_image(p["encoded"]), tf.float32), (224, 224))
            return img, p["boxes"]

        ds = (tf.data.Dataset.from_tensor_slices(files)
              .interleave(tf.data.TFRecordDataset, num_parallel_calls=tf.data.AUTOTUNE)
              .map(load, num_parallel_calls=tf.data.AUTOTUNE).ragged_batch(batch).prefetch(tf.data.AUTOTUNE))
        return ds, "fallback chain on datatool.core.tfrecord"


def time_read(tfdir: Path, batch: int) -> tuple[float, int, str]:
    ds, name = read_pipeline(tfdir, batch)
    n = 0
    t = time.perf_counter()
    for images, _targets in ds:
        n += int(images.shape[0])
    return n / (time.perf_counter() - t), n, name


def time_mobilenet(batch: int, steps: int) -> float:
    import keras
    import numpy as np

    backbone = keras.applications.MobileNetV2(input_shape=(224, 224, 3), include_top=False, weights=None)
    backbone.trainable = False
    inputs = keras.Input((224, 224, 3))
    x = keras.applications.mobilenet_v2.preprocess_input(inputs)
    x = keras.layers.GlobalAveragePooling2D()(backbone(x, training=False))
    outputs = keras.layers.Dense(5)(keras.layers.Dense(64, activation="relu")(x))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, 224, 224, 3)).astype("float32")
    y = rng.uniform(0, 1, (batch, 5)).astype("float32")
    model.train_on_batch(x, y)  # build + trace
    t = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * batch / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=4, help="MobileNetV2 training steps timed")
    args = ap.parse_args()

    import tensorflow as tf

    from datatool.split import plan_split, split, write_split

    work = Path(tempfile.mkdtemp(prefix="facekit-bench-tfrecords-"))
    try:
        src = work / "src"
        make_dataset(src, args.images)
        mb = sum(p.stat().st_size for p in (src / "images").glob("*.jpg")) / 1e6
        print(f"{args.images} images 640x480, {mb:.1f} MB of JPEG; cpus: {os.cpu_count()}; tensorflow {tf.__version__}")
        # warm both paths once (imports, file cache) so neither pays first-run costs
        bare_loop(src, work / "warm_bare")
        split(src, out=work / "warm_split", progress=False)
        n = args.images
        t = best_of(args.repeat, {
            "split": lambda r: split(src, out=work / f"split{r}", progress=False),
            "bare": lambda r: bare_loop(src, work / f"bare{r}"),
        })
        print(f"end to end (read labelme folder, check, group, assign, write; best of {args.repeat}):")
        print(f"  datatool split       : {n / t['split']:8.1f} images/s  ({t['split']:.2f} s)")
        print(f"  bare JSON->TFRecord  : {n / t['bare']:8.1f} images/s  ({t['bare']:.2f} s)")
        print(f"  ratio split/bare     : {t['bare'] / t['split']:.2f}x  (goal >= 0.9x)")

        plan = plan_split(src)
        t = best_of(args.repeat, {
            "write": lambda r: write_split(plan, out=work / f"ws{r}", progress=False),
            "bare": lambda r: bare_write(plan, work / f"bw{r}"),
        })
        print("write stage only (same plan, same record bytes; split adds shards, temp names + rename, split.csv):")
        print(f"  write_split          : {n / t['write']:8.1f} images/s  ({t['write']:.2f} s)")
        print(f"  bare TFRecordWriter  : {n / t['bare']:8.1f} images/s  ({t['bare']:.2f} s)")
        print(f"  ratio write/bare     : {t['bare'] / t['write']:.2f}x  (goal >= 0.9x)")

        tfdir = work / "split0"
        rates = [time_read(tfdir, args.batch) for _ in range(args.repeat)]
        read_rate, n_read, pipeline = max(rates)
        print(f"read   {pipeline}: {read_rate:8.1f} images/s  ({n_read} train images, 224x224, batch {args.batch})")
        train_rate = time_mobilenet(args.batch, args.steps)
        print(f"train  MobileNetV2 224 frozen backbone: {train_rate:8.1f} images/s (train_on_batch, {args.steps} steps)")
        print(f"read   ratio pipeline/training: {read_rate / train_rate:.1f}x  (goal: several times)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
