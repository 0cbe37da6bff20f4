"""Benchmark: `augment` and `split` on the local pool and on Apache Beam's DirectRunner, one run.

    .venv/bin/python bench/scale.py [--images 150] [--factor 10] [--size 640x480] [--max-side 320]

Generates JPEGs with a face-like blob and its labelme box, then on that same input times:

- augment with the local runner at 1 and 2 workers, and with `--runner beam` on DirectRunner
  `multi_processing` at 1 and 2 workers (variants/s);
- split of the augmented output (every image re-encoded to --max-side, so each record costs pixel
  work) the same four ways (records/s).

Prints throughput and its ratio to the local runner at 1 worker. Beam's fixed start-up (worker
processes, their imports, the job service) is measured apart, as the same run over a one-image
dataset, and also subtracted: "net" is throughput with it taken out. Goal: Beam at 2 workers
>= 0.7x the local pool at 2 workers. Needs the beam extra. The load average is printed before
and after (the machine may be shared).
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

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# Beam's worker processes import datatool too: the tree this file is in, not an installed copy
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(
    os.pathsep) if p])


def make_dataset(root: Path, n: int, width: int, height: int) -> Path:
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    images = root / "images"
    images.mkdir(parents=True)
    yy, xx = np.mgrid[0:height, 0:width]
    for i in range(n):
        base = rng.integers(40, 200, 3)[None, None, :] + 30 * np.sin((xx + yy * (i % 5)) / 40.0)[..., None]
        img = np.clip(base + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
        w, h = int(rng.integers(width // 6, width // 3)), int(rng.integers(height // 5, height // 2))
        x0, y0 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        cv2.ellipse(img, (x0 + w // 2, y0 + h // 2), (w // 2, h // 2), 0, 0, 360, (150, 180, 225), -1)
        name = f"img_{i:04d}.jpg"
        cv2.imwrite(str(images / name), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
        shape = {"label": "face", "points": [[x0, y0], [x0 + w, y0 + h]], "group_id": None, "description": "",
                 "shape_type": "rectangle", "flags": {}, "mask": None}
        (images / name).with_suffix(".json").write_text(json.dumps(
            {"version": "6.3.1", "flags": {}, "shapes": [shape], "imagePath": name, "imageData": None,
             "imageHeight": height, "imageWidth": width}))
    return root


def beam_options(workers: int) -> str:
    return f"--direct_num_workers={workers} --direct_running_mode=multi_processing"


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def load_avg() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=150)
    ap.add_argument("--factor", type=int, default=10)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--max-side", type=int, default=320)
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))

    from datatool.augment import augment_dataset
    from datatool.beam.augment import augment_on_beam
    from datatool.beam.split import split_on_beam
    from datatool.split import split

    work = Path(tempfile.mkdtemp(prefix="facekit-bench-scale-"))
    try:
        src = make_dataset(work / "src", args.images, width, height)
        one = make_dataset(work / "one", 1, width, height)
        print(f"load average before: {load_avg()}  ({os.cpu_count()} CPUs)")
        n_aug = args.images * args.factor
        print(f"augment: {args.images} images x factor {args.factor} = {n_aug} variants "
              f"({width}x{height}, originals not copied)")

        def aug_local(w, source=src, tag=""):
            return lambda: augment_dataset(source, out=work / f"aug-l{w}{tag}", factor=args.factor, workers=w,
                                           keep_originals=False)

        def aug_beam(w, source=src, tag=""):
            return lambda: augment_on_beam(source, out=work / f"aug-b{w}{tag}", factor=args.factor,
                                           keep_originals=False, beam_options=beam_options(w))

        aug = {"local 1": timed(aug_local(1)), "local 2": timed(aug_local(2))}
        for w in (1, 2):
            aug[f"beam {w}"] = timed(aug_beam(w))
            aug[f"beam {w} start-up"] = timed(aug_beam(w, one, "-one"))
        report("augment", "variants", n_aug, aug)

        tfsrc = work / "aug-l2"  # the augmented images: what split gets in practice
        n_split = sum(1 for _ in (tfsrc / "images").glob("*.jpg"))
        tfone = work / "aug-b1-one"
        print(f"\nsplit: {n_split} images, each re-encoded to --max-side {args.max_side}")
        split(tfone, out=work / "warm", max_side=args.max_side, progress=False)  # TensorFlow imported once
        spl = {}
        for w in (1, 2):
            spl[f"local {w}"] = timed(lambda: split(tfsrc, out=work / f"tf-l{w}", max_side=args.max_side,
                                                    workers=w, progress=False))
        for w in (1, 2):
            spl[f"beam {w}"] = timed(lambda: split_on_beam(tfsrc, out=work / f"tf-b{w}", max_side=args.max_side,
                                                           beam_options=beam_options(w)))
            spl[f"beam {w} start-up"] = timed(lambda: split_on_beam(
                tfone, out=work / f"tf-b{w}-one", max_side=args.max_side, beam_options=beam_options(w)))
        report("split", "records", n_split, spl)
        print(f"\nload average after: {load_avg()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(stage: str, unit: str, n: int, t: dict) -> None:
    base = n / t["local 1"]
    print(f"{'runner':<10} {'seconds':>8} {unit + '/s':>12} {'x local 1':>10}   net of start-up: {unit}/s, x local 1")
    for name in ("local 1", "local 2", "beam 1", "beam 2"):
        rate = n / t[name]
        line = f"{name:<10} {t[name]:>8.2f} {rate:>12.1f} {rate / base:>9.2f}x"
        if name.startswith("beam"):
            start = t[f"{name} start-up"]
            if t[name] - start > 0.2 * t[name]:
                net = n / (t[name] - start)
                line += f"   start-up {start:.2f}s; net {net:.1f}, {net / base:.2f}x"
            else:  # the work is lost in the start-up's noise: use more --images
                line += f"   start-up {start:.2f}s; net n/a (start-up is most of the run)"
        print(line)
    ratio = t["local 2"] / t["beam 2"]
    rest = t["beam 2"] - t["beam 2 start-up"]
    net = f"{t['local 2'] / rest:.2f}x net" if rest > 0.2 * t["beam 2"] else "net n/a"
    print(f"{stage}: beam 2 / local 2 = {ratio:.2f}x with start-up, {net} (goal >= 0.7x)")


if __name__ == "__main__":
    main()
