"""Benchmark: dataset-health checks against their baselines, measured in one run.

    .venv/bin/python bench/health.py [--images 2000] [--size 640x480] [--hashes 100000] [--repeat 1]

Generates JPEGs (smooth random scenes with noise, a labelme box each), then times:

- quality: `core.quality.scan` (grayscale decode, blur, luminance, entropy, phash) against a bare
  `cv2.imread` colour decode loop over the same files, both on one thread, and scan on --workers;
  goal >= 0.8x the bare loop, since decoding dominates;
- split: `split(group_near_duplicates=True)` against `split` without it (plan + TFRecords);
  goal >= 0.7x. Without grouping, `split` reads headers and passes JPEG bytes through without
  decoding them, so the grouped run's extra decode per image is most of its time. Measured with
  an empty hash cache (`core.hashcache`: every image decoded) and with the hashes cached (a rerun,
  or a split after `validate`, which caches them);
- search: `core.neardup.pairs_within` on --hashes random 64-bit hashes at distances 4, 8 (the
  default) and 12, against brute force (every pair XOR-popcounted with numpy) measured on 5,000
  hashes and scaled by the number of pairs.

Each figure is the best of --repeat runs (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_dataset(root: Path, n: int, width: int, height: int) -> list[Path]:
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    images = root / "images"
    images.mkdir(parents=True)
    small = rng.integers(0, 255, (n // 20 + 1, 12, 16, 3)).astype(np.float32)
    paths = []
    for k in range(n):
        # 20 frames per scene, each a few pixels further along: near duplicates, like a capture session
        base = cv2.resize(small[k // 20], (width + 40, height + 40), interpolation=cv2.INTER_CUBIC)
        s = k % 20
        img = base[s:s + height, s:s + width] + rng.normal(0, 6, (height, width, 3))
        p = images / f"img_{k:05d}.jpg"
        cv2.imwrite(str(p), np.clip(img, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
        x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
        shapes = [{"label": "face", "points": [[x0, y0], [x0 + width // 4, y0 + height // 4]], "group_id": None,
                   "description": "", "shape_type": "rectangle", "flags": {}, "mask": None}]
        data = {"version": "6.3.1", "flags": {}, "shapes": shapes, "imagePath": p.name, "imageData": None,
                "imageHeight": height, "imageWidth": width}
        p.with_suffix(".json").write_text(json.dumps(data))
        paths.append(p)
    return paths


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bare_decode(paths) -> None:
    import cv2

    for p in paths:
        cv2.imread(str(p))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--hashes", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    import numpy as np

    from datatool.core.neardup import DEFAULT_DISTANCE, pairs_within
    from datatool.core.quality import scan
    from datatool.split import split

    print(f"{args.images} images {width}x{height}, best of {args.repeat}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["FACEKIT_CACHE_DIR"] = str(Path(tmp) / "cache")  # never the user's cache
        root = Path(tmp) / "ds"
        paths = make_dataset(root, args.images, width, height)
        base = best(lambda: bare_decode(paths), args.repeat)
        rows = [("bare cv2.imread loop, 1 thread", base)]
        for w in sorted({1, args.workers}):
            rows.append((f"scan (quality + phash), {w} thread{'s' if w > 1 else ''}",
                         best(lambda: scan(paths, workers=w), args.repeat)))
        for name, secs in rows:
            print(f"  {name:40s} {args.images / secs:8.1f} images/s   {base / secs:5.2f}x bare")

        out = Path(tmp) / "tf"
        split(root, out=out, seed=0, progress=False, overwrite=True)  # warm-up: TensorFlow's import
        plain = best(lambda: split(root, out=out, seed=0, progress=False, overwrite=True), args.repeat)
        merged = []
        caches = iter(range(10**6))

        def grouped_run(fresh_cache: bool):
            if fresh_cache:  # an empty hash cache: every image is decoded and hashed
                os.environ["FACEKIT_CACHE_DIR"] = str(Path(tmp) / f"cache{next(caches)}")
            merged.append(split(root, out=Path(tmp) / "tf2", seed=0, progress=False, overwrite=True,
                                group_near_duplicates=True).merged_units)

        cold = best(lambda: grouped_run(True), args.repeat)
        warm = best(lambda: grouped_run(False), args.repeat)  # the hashes the last cold run cached
        print(f"  split without grouping                   {args.images / plain:8.1f} images/s")
        print(f"  split with near-duplicate grouping       {args.images / cold:8.1f} images/s   "
              f"{plain / cold:5.2f}x without ({merged[-1]} units merged; empty hash cache)")
        print(f"  the same, hashes cached (rerun/validate) {args.images / warm:8.1f} images/s   "
              f"{plain / warm:5.2f}x without")

    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**64 - 1, size=args.hashes, dtype=np.uint64, endpoint=True)
    small = hashes[:5000]
    t = time.perf_counter()
    for r0 in range(0, len(small), 1000):
        np.nonzero(np.bitwise_count(small[r0:r0 + 1000, None] ^ small[None, :]) <= DEFAULT_DISTANCE)
    brute = (time.perf_counter() - t) * (args.hashes / len(small)) ** 2
    as_ints = [int(h) for h in hashes]
    print(f"near-duplicate search, {args.hashes:,} random 64-bit hashes "
          f"(brute force, scaled from 5,000: {brute:.0f} s):")
    for d in (4, DEFAULT_DISTANCE, 12):
        holder = []
        secs = best(lambda: holder.append(pairs_within(as_ints, d)), args.repeat)
        print(f"  distance {d:2d}{' (default)' if d == DEFAULT_DISTANCE else '':10s} {secs:7.2f} s   "
              f"{len(holder[-1][0])} pairs   {brute / secs:7.0f}x brute force")


if __name__ == "__main__":
    main()
