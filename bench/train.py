"""Benchmark: images/s of the trainer's stages for MobileNetV2 @224 and VGG16 @120 (the seed
projects' sizes), on generated TFRecords, weights=None (nothing is downloaded).

    .venv/bin/python bench/train.py [--images 64] [--batch 16] [--repeat 2] [--backbones mobilenetv2,vgg16]

Per backbone, in one process:
- pipeline: `trainer.data.make_dataset` alone (decode + resize + batch), the baseline;
- fit, frozen: the heads phase (`compile_for_phase(fine_tune_layers=0)`), backbone in inference mode;
- fit, fine-tune: the default top N layers unfrozen (10 for MobileNetV2, 4 for VGG16);
- evaluate: `trainer.evaluate.predict_split` over the records (the model in inference);
- predict: `trainer.detector.RunDetector.detect_many` on 640x480 RGB frames (resize inside, 16 at a time).

Each fit figure is one epoch after a warm-up epoch (graph tracing excluded), best of --repeat.
Ratios are against the pipeline's images/s in the same run: the machine may be shared, so the
absolute numbers move more than the ratios.
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

SIZES = {"mobilenetv2": 224, "vgg16": 120}


def write_records(out: Path, n: int, *, side: int = 320, seed: int = 0) -> Path:
    """n noise JPEGs (side x side) with a bright square, 1 in 5 negative, into train/val/test shards."""
    import numpy as np
    import tensorflow as tf

    from datatool.core.images import encode_jpeg
    from datatool.core.sample import Box, Sample
    from datatool.core.tfrecord import shard_name, to_example

    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    examples = []
    for k in range(n):
        arr = rng.integers(0, 90, (side, side, 3), dtype=np.uint8)
        boxes = ()
        if k % 5:
            s = int(rng.integers(side // 5, side // 2))
            x0, y0 = (int(v) for v in rng.integers(0, side - s, 2))
            arr[y0:y0 + s, x0:x0 + s] = (235, 200, 170)
            boxes = (Box(x0, y0, x0 + s, y0 + s),)
        sample = Sample(image_path=Path(f"{k}.jpg"), width=side, height=side, boxes=boxes, image_id=f"{k}.jpg",
                        group=str(k))
        examples.append(to_example(sample, encode_jpeg(arr), width=side, height=side).SerializeToString())
    for split in ("train", "val", "test"):
        with tf.io.TFRecordWriter(str(out / shard_name(split, 0, 1))) as w:
            for e in examples:
                w.write(e)
    (out / "dataset.json").write_text(json.dumps({"task": "detection"}))
    return out


def images_per_s(fn, n_images: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n_images / best


def bench_backbone(name: str, tfdir: Path, work: Path, *, n: int, batch: int, repeat: int) -> dict:
    import keras
    import numpy as np

    from trainer import data as tdata
    from trainer.evaluate import predict_split
    from trainer.detector import RunDetector
    from trainer.fit import FitConfig, compile_for_phase
    from trainer.models import DEFAULT_FINE_TUNE_LAYERS, build_detector, save_model

    size = SIZES[name]
    ds = tdata.make_dataset(tfdir, "train", image_size=size, batch_size=batch, shuffle=True, seed=0)
    res = {"pipeline": images_per_s(lambda: [None for _ in ds], n, repeat)}

    keras.utils.set_random_seed(0)
    model = build_detector(backbone=name, image_size=size, weights="none", bn_inference=True)

    def fit_rate(layers):
        # a pretrained-like config: BatchNorm stays frozen, as in a transfer-learning fit
        config = FitConfig(backbone=name, image_size=size, weights="imagenet", box_weight=20.0)
        compile_for_phase(model, config, fine_tune_layers=layers, lr=1e-4)
        model.fit(ds, epochs=1, verbose=0)  # warm-up: traces the train step
        return images_per_s(lambda: model.fit(ds, epochs=1, verbose=0), n, repeat)

    res["fit_frozen"] = fit_rate(0)
    res["fit_fine_tune"] = fit_rate(DEFAULT_FINE_TUNE_LAYERS[name])
    predict_split(model, tfdir, "test", image_size=size, batch_size=batch)  # warm-up
    res["evaluate"] = images_per_s(lambda: predict_split(model, tfdir, "test", image_size=size, batch_size=batch),
                                   n, repeat)
    run = work / f"run-{name}"
    run.mkdir()
    save_model(model, run / "model.keras")
    (run / "config.json").write_text(json.dumps({"task": "detection", "image_size": size}))
    det = RunDetector(run, threshold=0.0)
    frames = [np.random.default_rng(k).integers(0, 255, (480, 640, 3), dtype=np.uint8) for k in range(batch)]
    det.detect_many(frames)  # warm-up
    rounds = max(1, n // batch)
    res["predict"] = images_per_s(lambda: [det.detect_many(frames) for _ in range(rounds)], rounds * batch, repeat)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--backbones", default="mobilenetv2,vgg16")
    args = ap.parse_args()
    import tensorflow as tf

    work = Path(tempfile.mkdtemp(prefix="facekit-bench-train-"))
    try:
        tfdir = write_records(work / "tf", args.images)
        print(f"{args.images} generated 320x320 records, batch {args.batch}, weights=None, "
              f"{os.cpu_count()} CPUs, TensorFlow {tf.__version__}; images/s (best of {args.repeat}), "
              f"ratio = / pipeline images/s in this run")
        for name in args.backbones.split(","):
            res = bench_backbone(name, tfdir, work, n=args.images, batch=args.batch, repeat=args.repeat)
            base = res["pipeline"]
            print(f"\n{name} @ {SIZES[name]}")
            for key, label in (("pipeline", "tf.data pipeline (baseline)"), ("fit_frozen", "fit, frozen backbone"),
                               ("fit_fine_tune", "fit, fine-tune top layers"), ("evaluate", "evaluate"),
                               ("predict", "predict (640x480 frames)")):
                print(f"  {label:30s} {res[key]:9.1f} img/s   {res[key] / base:6.3f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
