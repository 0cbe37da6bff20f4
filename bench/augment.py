"""Benchmark: `datatool augment` against a bare augmentation loop, measured in one run.

    .venv/bin/python bench/augment.py [--images 60] [--factor 10] [--recipe default] [--repeat 5] [--dir D]

Generates 640x480 JPEGs with a face-like blob and its labelme box, then times, on the same
recipe and the same images:

- bare: the loop the seed projects write (cv2.imread once per image, then per variant
  Albumentations -> cv2.imwrite), with OpenCV pinned to one thread; no JSON, no seeds;
- datatool augment with 1 worker (in-process: this thread draws the variants, a helper thread
  encodes and writes them) and with all cores (process pool, each worker pinned to one OpenCV
  thread), originals not copied so both sides write the same images;
- for reference, the bare loop writing a labelme JSON beside each variant too (plain
  json.dumps + open/write): what the output format itself costs; the bare loop forked into
  one process per core, each on its share of the images: the most this machine's cores give any
  parallel run of that loop (the ceiling for the pool), and the same with the JSON (the ceiling
  for any tool writing the labelme JSON beside each image); and `--workers 1` confined to one
  core, where its helper thread cannot run beside it. Goals are against the bare loop.

Prints variants/s and the ratios to the bare loop. Goals: >= 0.95x with 1 worker, >= 1.8x with
2 workers on 2 quiet cores. Each figure is the median of --repeat runs, interleaved (the machine
may be shared: the load average is printed before and after; a burst of load elsewhere slows
single runs, or leaves one lucky run, and the median follows neither); pool runs include
starting the workers. Also printed: CPU seconds per variant of every process of a run (its pool
workers included), which other load disturbs less than wall time.
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
from statistics import median

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_dataset(root: Path, n: int) -> None:
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    images = root / "images"
    images.mkdir(parents=True)
    yy, xx = np.mgrid[0:480, 0:640]
    for i in range(n):
        base = (rng.integers(40, 200, 3)[None, None, :] + 30 * np.sin((xx + yy * (i % 5)) / 40.0)[..., None])
        img = np.clip(base + rng.normal(0, 12, (480, 640, 3)), 0, 255).astype(np.uint8)
        w, h = int(rng.integers(90, 200)), int(rng.integers(110, 240))
        x0, y0 = int(rng.integers(0, 640 - w)), int(rng.integers(0, 480 - h))
        cv2.ellipse(img, (x0 + w // 2, y0 + h // 2), (w // 2, h // 2), 0, 0, 360, (150, 180, 225), -1)
        name = f"img_{i:04d}.jpg"
        cv2.imwrite(str(images / name), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
        shape = {"label": "face", "points": [[x0, y0], [x0 + w, y0 + h]], "group_id": None, "description": "",
                 "shape_type": "rectangle", "flags": {}, "mask": None}
        (images / name).with_suffix(".json").write_text(json.dumps(
            {"version": "6.3.1", "flags": {}, "shapes": [shape], "imagePath": name, "imageData": None,
             "imageHeight": 480, "imageWidth": 640}))


def bare_loop(src: Path, out: Path, recipe_name: str, factor: int, *, with_json: bool = False,
              part: tuple[int, int] = (0, 1)) -> int:
    """The baseline; `with_json` also writes each variant's labelme JSON with a plain open/write
    (what the output format costs, apart from anything facekit adds). `part=(k, n)`: only every
    n-th image from the k-th (one process's share in `bare_parallel`)."""
    import random

    import cv2
    import numpy as np

    from datatool.augment import build_pipeline, load_recipe
    from datatool.dataset import load_dataset

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        pipeline = build_pipeline(load_recipe(recipe_name))
        # One generator shared by all transforms, as augment does. (`Compose(seed=)` /
        # `set_random_seed` give every transform the same stream in Albumentations 2.0.8, so their
        # p-draws coincide: half the variants would get no transform at all and the loop would
        # do less work than the recipe asks for.)
        pipeline.set_random_state(np.random.default_rng(0), random.Random(0))
        out.mkdir(parents=True, exist_ok=True)
        n = 0
        for s in load_dataset(src).labeled[part[0]::part[1]]:
            rgb = cv2.cvtColor(cv2.imread(str(s.image_path)), cv2.COLOR_BGR2RGB)
            boxes = [b.xyxy for b in s.boxes]
            for v in range(factor):
                r = pipeline(image=rgb, bboxes=boxes, box_index=list(range(len(boxes))))
                name = f"{s.image_path.stem}__aug{v:04d}"
                cv2.imwrite(str(out / f"{name}.jpg"),
                            cv2.cvtColor(r["image"], cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
                if with_json:
                    h, w = r["image"].shape[:2]
                    shapes = [{"label": "face", "points": [[float(b[0]), float(b[1])], [float(b[2]), float(b[3])]],
                               "group_id": None, "description": "", "shape_type": "rectangle", "flags": {},
                               "mask": None} for b in r["bboxes"]]
                    with open(out / f"{name}.json", "w", encoding="utf-8") as f:
                        f.write(json.dumps({"version": "6.3.1", "flags": {}, "shapes": shapes,
                                            "imagePath": f"{name}.jpg", "imageData": None, "imageHeight": h,
                                            "imageWidth": w}, indent=2))
                n += 1
        return n
    finally:
        cv2.setNumThreads(threads)


def bare_parallel(src: Path, out: Path, recipe_name: str, factor: int, processes: int, *,
                  with_json: bool = False) -> int:
    """The bare loop in `processes` forked processes, each on its share of the images: what this
    machine's cores give an embarrassingly parallel loop with no coordination at all - the
    ceiling for `augment --workers N` (shared caches, memory bandwidth and clock limits included).
    With `with_json`, the ceiling for any tool that writes the labelme JSON augment must write."""
    import multiprocessing as mp

    with mp.get_context("fork").Pool(processes) as pool:
        return sum(pool.starmap(_bare_part, [(src, out, recipe_name, factor, (k, processes), with_json)
                                             for k in range(processes)]))


def _bare_part(src, out, recipe_name, factor, part, with_json):
    return bare_loop(src, out, recipe_name, factor, part=part, with_json=with_json)


def on_one_core(fn, *args) -> int:
    """`fn(*args)` in a forked process allowed only this process's first core (Linux): what a
    run with `--workers 1` does on a one-core machine, where its helper thread has no core of
    its own. Its CPU time reaches `cpu_seconds` as a child's once it ends."""
    import multiprocessing as mp

    core = min(os.sched_getaffinity(0))
    with mp.get_context("fork").Pool(1) as pool:
        return pool.apply(_pinned, (core, fn, args))


def _pinned(core, fn, args):
    os.sched_setaffinity(0, {core})
    return fn(*args)


def facekit(src: Path, out: Path, recipe_name: str, factor: int, workers: int) -> int:
    from datatool.augment import augment_dataset

    s = augment_dataset(src, out=out, recipe=recipe_name, factor=factor, seed=0, workers=workers,
                        keep_originals=False)
    return s.counts["variants"]


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its children that have ended."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> int:
    from datatool.augment import default_workers

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--factor", type=int, default=10)
    ap.add_argument("--recipe", default="default")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dir", help="where the images and outputs go (default: the system's temp folder); "
                                  "e.g. /dev/shm to leave the disk's own swings out of the figures")
    args = ap.parse_args()

    cores = default_workers()
    tmp = Path(tempfile.mkdtemp(prefix="facekit-bench-augment-", dir=args.dir))
    try:
        src = tmp / "src"
        make_dataset(src, args.images)
        runs = [("bare loop", lambda o: bare_loop(src, o, args.recipe, args.factor)),
                ("augment --workers 1", lambda o: facekit(src, o, args.recipe, args.factor, 1)),
                ("bare loop + JSON", lambda o: bare_loop(src, o, args.recipe, args.factor, with_json=True))]
        if cores > 1:
            runs.append((f"augment --workers {cores}", lambda o: facekit(src, o, args.recipe, args.factor, cores)))
            runs.append((f"bare loop x {cores} procs",
                         lambda o: bare_parallel(src, o, args.recipe, args.factor, cores)))
            runs.append((f"bare + JSON x {cores} procs",
                         lambda o: bare_parallel(src, o, args.recipe, args.factor, cores, with_json=True)))
            if hasattr(os, "sched_setaffinity"):
                runs.append(("augment -w 1, one core",
                             lambda o: on_one_core(facekit, src, o, args.recipe, args.factor, 1)))
        os.sync()
        # warm-up: first calls of OpenCV/Albumentations code paths, page cache
        bare_loop(src, tmp / "warm-bare", args.recipe, 1)
        facekit(src, tmp / "warm-augment", args.recipe, 1, 1)
        rates: dict[str, list[float]] = {name: [] for name, _ in runs}
        cpu: dict[str, list[float]] = {name: [] for name, _ in runs}  # CPU seconds per variant, workers included
        load_before = os.getloadavg()[0]
        k = 0
        for r in range(args.repeat):
            # interleaved, so a burst of load elsewhere hits every variant alike, and in an order
            # turned by one each round, so no variant always runs in the same place
            for name, fn in runs[r % len(runs):] + runs[:r % len(runs)]:
                out = tmp / f"out{k}"
                k += 1
                os.sync()  # earlier runs' writes are flushed outside the timed region
                t, c = time.perf_counter(), cpu_seconds()
                n = fn(out)
                rates[name].append(n / (time.perf_counter() - t))
                cpu[name].append((cpu_seconds() - c) / n)
                shutil.rmtree(out)  # the next runs write into the same free space
        base, base_cpu = median(rates["bare loop"]), median(cpu["bare loop"])
        print(f"augment benchmark: {args.images} images 640x480 x {args.factor} variants, recipe {args.recipe}, "
              f"in {tmp.parent}, "
              f"{cores} cores, median of {args.repeat}, load average {load_before:.2f} before, "
              f"{os.getloadavg()[0]:.2f} after")
        for name, _ in runs:
            r, c = median(rates[name]), median(cpu[name])
            first = f"   (first run {rates[name][0] / base:.2f}x)" if len(runs) > 3 and name == runs[3][0] else ""
            print(f"  {name:<24} {r:8.1f} variants/s {r / base:5.2f}x bare loop   CPU {c * 1e3:5.2f} ms/variant "
                  f"({base_cpu / c:4.2f}x){first}")
        print("goals: >= 0.95x with 1 worker, >= 1.80x with 2 workers on 2 quiet cores")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
