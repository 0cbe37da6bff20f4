"""Benchmark: `trainer fit` with and without the feature cache, same model, same records, one run.

    .venv/bin/python bench/feature_cache.py [--images 256] [--val 64] [--batch 16] [--epochs 4]
        [--fine-tune-epochs 4] [--backbones mobilenetv2,vgg16] [--json PATH]

Per backbone (MobileNetV2 @224, VGG16 @120: the seed projects' sizes), `trainer.fit.fit` runs
twice on the same generated TFRecords (320x320 JPEGs: noise, a bright square as the face, one
in five negative): heads phase then the default top N layers fine-tuned (10 for MobileNetV2,
4 for VGG16), once with `feature_cache=True` (in memory) and once with `feature_cache=False`.

Backbone weights: random, saved to a local file and passed as `--weights PATH`, so the backbone
is frozen and in inference mode exactly as with ImageNet weights (which cannot be downloaded
here). Random frozen weights cost the same time as trained ones, so the speed ratio holds; the
metrics only have to agree between the two runs.

Printed: seconds per epoch (the best of each phase's epochs after its first, which traces the
graph; validation and the run's callbacks included) with and without the cache and their ratio (goals: heads
<= 0.1x, fine-tuning <= 0.5x), the one-off feature pass of each phase, and the final
validation metrics of both fits. The machine may be shared with other work: absolute times
move, the ratios are measured side by side in the same process.
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
GOALS = {"heads": 0.1, "fine_tune": 0.5}
METRICS = ("val_loss", "val_presence_accuracy", "val_presence_auc", "val_box_iou")


def write_records(out: Path, *, train: int, val: int, side: int = 320, seed: int = 0) -> Path:
    """`train` + `val` distinct generated records as `train-00000-of-00001.tfrecord` and
    `val-00000-of-00001.tfrecord`, plus a `dataset.json` saying the task."""
    import numpy as np
    import tensorflow as tf

    from datatool.core.images import encode_jpeg
    from datatool.core.sample import Box, Sample
    from datatool.core.tfrecord import shard_name, to_example

    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", train), ("val", val)):
        with tf.io.TFRecordWriter(str(out / shard_name(split, 0, 1))) as w:
            for k in range(n):
                arr = rng.integers(0, 90, (side, side, 3), dtype=np.uint8)
                boxes = ()
                if k % 5:
                    s = int(rng.integers(side // 5, side // 2))
                    x0, y0 = (int(v) for v in rng.integers(0, side - s, 2))
                    arr[y0:y0 + s, x0:x0 + s] = (235, 200, 170)
                    boxes = (Box(x0, y0, x0 + s, y0 + s),)
                key = f"{split}_{k}.jpg"
                sample = Sample(image_path=Path(key), width=side, height=side, boxes=boxes, image_id=key, group=key)
                w.write(to_example(sample, encode_jpeg(arr), width=side, height=side).SerializeToString())
    (out / "dataset.json").write_text(json.dumps({"task": "detection"}))
    return out


def timed_fit(tfdir: Path, run: Path, *, backbone: str, weights: Path, cache: bool, epochs: int, ft_epochs: int,
              batch: int) -> dict:
    """One fit; seconds per epoch by phase, the feature pass, the final validation metrics."""
    import keras

    from trainer.fit import FitConfig, fit, read_history
    from trainer.models import DEFAULT_FINE_TUNE_LAYERS

    seconds = {}

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds[epoch] = time.perf_counter() - self.start

    config = FitConfig(backbone=backbone, image_size=SIZES[backbone], weights=str(weights), epochs=epochs,
                       fine_tune_layers=DEFAULT_FINE_TUNE_LAYERS[backbone], fine_tune_epochs=ft_epochs,
                       batch_size=batch, patience=1000, seed=0, feature_cache=cache, feature_cache_ram=0.5)
    t0 = time.perf_counter()
    record = fit(tfdir, run, config=config, verbose=0, extra_callbacks=[EpochTimer()], log=lambda *a: None)
    total = time.perf_counter() - t0
    phases = {"heads": range(0, epochs), "fine_tune": range(epochs, epochs + ft_epochs)}
    out = {"total_s": total, "epoch_s": {}, "first_epoch_s": {}, "feature_pass_s": {}}
    for name, span in phases.items():
        times = [seconds[e] for e in span if e in seconds]
        if times:
            out["first_epoch_s"][name] = times[0]
            out["epoch_s"][name] = min(times[1:] or times)
    for entry in record.get("feature_cache", []):
        out["feature_pass_s"][entry["phase"]] = entry["compute_s"]
        out.setdefault("cache", {})[entry["phase"]] = {k: entry[k] for k in ("boundary", "shape", "bytes", "mode")}
    last = read_history(run)[-1]
    out["val"] = {k: last.get(k) for k in METRICS}
    return out


def bench_backbone(name: str, work: Path, tfdir: Path, *, epochs: int, ft_epochs: int, batch: int) -> dict:
    import keras

    from trainer.weights import build_backbone

    weights = work / f"{name}.weights.h5"
    keras.utils.set_random_seed(0)
    build_backbone(name, image_size=SIZES[name], weights="none").save_weights(str(weights))
    res = {}
    for cache in (False, True):  # the uncached baseline first: the cached run gets no warmer machine
        res["cache" if cache else "no_cache"] = timed_fit(tfdir, work / f"run-{name}-{cache}", backbone=name,
                                                          weights=weights, cache=cache, epochs=epochs,
                                                          ft_epochs=ft_epochs, batch=batch)
    return res


def report(name: str, res: dict) -> None:
    from trainer.models import DEFAULT_FINE_TUNE_LAYERS

    plain, cached = res["no_cache"], res["cache"]
    print(f"\n{name} @ {SIZES[name]}")
    print(f"  {'phase':28s} {'no cache s/epoch':>17s} {'cache s/epoch':>14s} {'ratio':>8s}  goal")
    for phase, label in (("heads", "heads (backbone frozen)"),
                         ("fine_tune", f"fine-tune top {DEFAULT_FINE_TUNE_LAYERS[name]} layers")):
        if phase not in plain["epoch_s"] or phase not in cached["epoch_s"]:
            continue
        a, b = plain["epoch_s"][phase], cached["epoch_s"][phase]
        ok = "met" if b / a <= GOALS[phase] else "NOT met"
        print(f"  {label:28s} {a:17.3f} {b:14.3f} {b / a:7.3f}x  <= {GOALS[phase]}x ({ok})")
    for phase, s in cached["feature_pass_s"].items():
        c = cached["cache"][phase]
        print(f"  one-off feature pass, {phase}: {s:.2f} s (cached at '{c['boundary']}', "
              f"{'x'.join(map(str, c['shape']))} per image, {c['bytes'] / 1e6:.1f} MB, {c['mode']})")
    print(f"  whole fit: {plain['total_s']:.1f} s without the cache, {cached['total_s']:.1f} s with it")
    print("  final validation metrics:")
    for key in METRICS:
        a, b = plain["val"].get(key), cached["val"].get(key)
        print(f"    {key:24s} no cache {a:9.5f}   cache {b:9.5f}   |diff| {abs(a - b):.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=256, help="training records")
    ap.add_argument("--val", type=int, default=64, help="validation records")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=4, help="heads-phase epochs (the first one traces)")
    ap.add_argument("--fine-tune-epochs", type=int, default=4)
    ap.add_argument("--backbones", default="mobilenetv2,vgg16")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    import tensorflow as tf

    work = Path(tempfile.mkdtemp(prefix="facekit-bench-feature-cache-"))
    try:
        tfdir = write_records(work / "tf", train=args.images, val=args.val)
        print(f"{args.images} train + {args.val} val generated 320x320 records, batch {args.batch}, "
              f"{args.epochs} + {args.fine_tune_epochs} epochs, random backbone weights from a local file, "
              f"{os.cpu_count()} CPUs, TensorFlow {tf.__version__}")
        results = {}
        for name in args.backbones.split(","):
            results[name] = bench_backbone(name, work, tfdir, epochs=args.epochs, ft_epochs=args.fine_tune_epochs,
                                           batch=args.batch)
            report(name, results[name])
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
