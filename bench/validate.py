"""Benchmark: `datatool validate` against a bare check loop, measured in one run.

    .venv/bin/python bench/validate.py [--images 60] [--size 1280x960] [--repeat 2]

Generates JPEGs with a labelme JSON each, then times on the same files:

- bare: the loop one would write by hand - json.load each JSON, PIL-decode each image in full
  and compare its size with imageWidth/imageHeight; no EXIF, no hashing, no box checks;
- validate() with 1 decoding thread and with --workers (default: all cores, at most 4), with its
  image-health checks (perceptual hash and quality measures: a second, reduced decode per image,
  work the bare loop does not do) and without them (`--no-health`: the checks the bare loop
  stands for).

Prints images/s and the ratios to the bare loop. Each figure is the best of --repeat runs
(the machine may be shared).
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


def make_dataset(root: Path, n: int, width: int, height: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    images = root / "images"
    images.mkdir(parents=True)
    yy, xx = np.mgrid[0:height, 0:width]
    for k in range(n):
        base = (np.sin(xx / (20 + k)) * 60 + np.cos(yy / 30) * 60 + 120).astype(np.uint8)
        arr = np.stack([base, np.roll(base, k, axis=1), base[::-1]], axis=-1)
        arr = np.clip(arr.astype(np.int16) + rng.integers(-20, 20, arr.shape), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(images / f"img_{k:04d}.jpg", quality=90)
        x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
        shapes = [{"label": "face", "points": [[x0, y0], [x0 + width // 4, y0 + height // 4]], "group_id": None,
                   "description": "", "shape_type": "rectangle", "flags": {}, "mask": None}]
        data = {"version": "6.3.1", "flags": {}, "shapes": shapes, "imagePath": f"img_{k:04d}.jpg",
                "imageData": None, "imageHeight": height, "imageWidth": width}
        (images / f"img_{k:04d}.json").write_text(json.dumps(data))


def bare(root: Path) -> int:
    from PIL import Image

    bad = 0
    for jp in sorted((root / "images").glob("*.json")):
        data = json.loads(jp.read_text())
        with Image.open(jp.with_suffix(".jpg")) as im:
            im.load()
            bad += im.size != (data["imageWidth"], data["imageHeight"])
    return bad


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--size", default="1280x960")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    from datatool.validate import validate

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        make_dataset(root, args.images, width, height)
        rows = [("bare loop (json + full decode)", best(lambda: bare(root), args.repeat))]
        for health in (False, True):
            options = {} if health else {"near_dup_distance": None, "quality": None}
            for w in sorted({1, args.workers}):
                report = validate(root, workers=w, **options)
                assert not report.has_errors, [str(i) for i in report.issues]
                rows.append((f"validate{'' if health else ' --no-health'}, {w} thread{'s' if w > 1 else ''}",
                             best(lambda: validate(root, workers=w, **options), args.repeat)))
    base = rows[0][1]
    print(f"{args.images} images {width}x{height}, best of {args.repeat}, {os.cpu_count()} cores")
    for name, secs in rows:
        print(f"  {name:34s} {args.images / secs:8.1f} images/s   {base / secs:5.2f}x bare")


if __name__ == "__main__":
    main()
