"""Quality probe (not a test): the dense detector (`trainer.dense`) trained from scratch with plain
Keras on the demo's TFRecords, then COCO AP@0.5 on their test split and on the held-out photos.

    .venv/bin/python bench/dense_probe.py [--tfdir demo_out/tfrecords] [--heldout demo_out/heldout-tf]
        [--configs 128:0.35,160:0.35] [--epochs 30] [--batch 32] [--lr 3e-3] [--flip] [--json PATH]

`--configs`: `SIZE:ALPHA` pairs, each trained from scratch (`--weights none`), same seed. Per
config it prints the fit's wall time, the final training metrics, and AP@0.5 / AP@[.5:.95]
(pycocotools through `trainer.metrics.coco_ap`) on both sets. The data pipeline is the one
`trainer.data` uses (schema parse, decode, plain resize) with `trainer.dense.encode_targets` as
the target; decoded images are kept in memory after the first epoch. `--flip` adds random
horizontal flips (the demo's augment recipe already flips offline).

Goals (issue 13), from scratch within ~1.5x the demo's fit time (~3 min on the 2-core machine):
test AP@0.5 >= 0.6, held-out AP@0.5 >= 0.5. Times depend on what else runs on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def records(tfdir, split, *, image_size):
    """`(images uint8 (s, s, 3), boxes (n, 4) normalised)` per record, unbatched."""
    import tensorflow as tf

    from datatool.core.tfrecord import decode_image, parse_example
    from trainer.data import resize_images, shards

    def load(raw):
        p = parse_example(raw)
        image = resize_images(decode_image(p["encoded"]), image_size)
        return tf.cast(tf.round(image), tf.uint8), p["boxes"]

    files = [str(f) for f in shards(tfdir, split)]
    return tf.data.TFRecordDataset(files).map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def train_pipeline(tfdir, grid, *, batch, seed, flip):
    import tensorflow as tf

    from trainer.dense import encode_targets

    def target(image, boxes):
        if flip:
            do = tf.random.uniform([], seed=None) < 0.5
            image = tf.cond(do, lambda: tf.image.flip_left_right(image), lambda: image)
            boxes = tf.cond(do, lambda: tf.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], 1),
                            lambda: boxes)
        return tf.cast(image, tf.float32), {"cells": encode_targets(boxes, grid)}

    ds = records(tfdir, "train", image_size=grid.image_size).cache()
    ds = ds.shuffle(2048, seed=seed, reshuffle_each_iteration=True)
    return ds.map(target, num_parallel_calls=tf.data.AUTOTUNE).batch(batch).prefetch(tf.data.AUTOTUNE)


def evaluate(model, tfdir, split, *, image_size):
    import numpy as np

    from trainer.metrics import coco_ap

    gts, dets, scores = [], [], []
    images = []
    for image, boxes in records(tfdir, split, image_size=image_size):
        images.append(image.numpy())
        gts.append(boxes.numpy())
    out = model.predict(np.stack(images).astype("float32"), batch_size=32, verbose=0)
    for b, s in zip(out["boxes"], out["scores"]):
        keep = s > 0
        dets.append(b[keep])
        scores.append(s[keep])
    ap = coco_ap(gts, dets, scores)
    found = sum(int(((s >= 0.5)).sum()) for s in scores)
    return {"ap50": ap["ap50"], "ap50_95": ap["ap50_95"], "images": len(gts), "faces": sum(len(g) for g in gts),
            "detections_ge_0.5": found}


def run_config(args, size, alpha):
    import keras

    from trainer.dense import build_dense_detector, compile_dense, grid_of, training_model

    keras.utils.set_random_seed(args.seed)
    model = build_dense_detector(image_size=size, alpha=alpha, weights="none", channels=args.channels,
                                 depth=args.depth)
    grid = grid_of(model)
    ds = train_pipeline(args.tfdir, grid, batch=args.batch, seed=args.seed, flip=args.flip)
    steps = sum(1 for _ in ds)  # also fills the cache: decoding is not in the fit's time
    twin = training_model(model)
    schedule = keras.optimizers.schedules.CosineDecay(args.lr, decay_steps=steps * args.epochs, alpha=0.05,
                                                      warmup_target=None)
    compile_dense(twin, optimizer=keras.optimizers.Adam(schedule), box_weight=args.box_weight)
    t0 = time.perf_counter()
    history = twin.fit(ds, epochs=args.epochs, verbose=0)
    fit_s = time.perf_counter() - t0
    result = {"image_size": size, "alpha": alpha, "epochs": args.epochs, "steps_per_epoch": steps,
              "fit_s": round(fit_s, 1), "params": model.count_params(), "cells": grid.cells,
              "train": {k: round(v[-1], 4) for k, v in history.history.items()},
              "test": evaluate(model, args.tfdir, "test", image_size=size),
              "heldout": evaluate(model, args.heldout, "test", image_size=size)}
    if args.save:
        model.save(Path(args.save) / f"dense_{size}_{alpha}.keras")
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tfdir", default="demo_out/tfrecords")
    p.add_argument("--heldout", default="demo_out/heldout-tf")
    p.add_argument("--configs", default="128:0.35,160:0.35")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--box-weight", type=float, default=2.0)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--flip", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", default=None, help="folder to save each trained model into")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    results = []
    for item in args.configs.split(","):
        size, alpha = item.split(":")
        r = run_config(args, int(size), float(alpha))
        results.append(r)
        print(f"{r['image_size']:>4} px alpha {r['alpha']:<5} {r['epochs']} epochs x {r['steps_per_epoch']} steps: "
              f"fit {r['fit_s']:6.1f} s | test AP@0.5 {r['test']['ap50']:.3f} (AP {r['test']['ap50_95']:.3f}) | "
              f"held-out AP@0.5 {r['heldout']['ap50']:.3f} (AP {r['heldout']['ap50_95']:.3f}) | "
              f"train {r['train']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
