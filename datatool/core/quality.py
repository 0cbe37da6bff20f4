"""Image quality, measured in one grayscale decode per image: sharpness, brightness, information,
shape and size, plus the perceptual hash for near-duplicate search (`neardup`).

What is measured (`measure`), and on what:
- `blur`: variance of the Laplacian of the image shrunk so its long side is `BLUR_SIDE` px (a
  fixed scale, so a 4000 px photo and a 640 px frame of the same scene score alike) and its
  1st..99th luminance percentiles stretched to 0..255 (the Laplacian grows with contrast, and a
  dark photo is not a blurred one). Low = blurry.
- `mean`, `p5`, `p95`: luminance (0-255) mean and 5th / 95th percentiles, from the histogram.
- `entropy`: Shannon entropy of the luminance histogram, bits (0 for a flat image, 8 at most).
- `width`, `height`, `aspect` (long side / short side), `phash` (64 bits, `neardup.phash_gray`).

When an image is flagged (`quality_issues`), following cleanvision's checks where they exist
(blurry, dark, light, low information, odd aspect ratio, odd size):
- blurry: `blur` below `blur` (absolute, like cleanvision's blurriness score; the default is
  measured on scikit-image's photos: sharp ones score 1,000-14,000, the same photos under a
  Gaussian blur of sigma 3 score 30-60, fine textures like brick or grass 400-600);
- dark: `p95` below `dark` (almost nothing bright: those photos at 20% of their brightness
  score 20-50, the originals 100-255); too bright: `p5` above `bright`;
- low information: `entropy` below `min_entropy` bits;
- extreme aspect ratio: long/short side above `max_aspect`;
- very small: short side below `min_side` px, or - relative to the dataset, as cleanvision's
  odd-size check is - a side (sqrt of the area) below `small_fraction` of the dataset's median.

Each flagged image is a warning naming the measured value and the threshold option.

Decoding: the header (`core.images.probe`: size as displayed, the pixel-count guard) picks a
scale, then OpenCV decodes to grayscale (`cv2.imdecode`, EXIF orientation applied) at 1/2, 1/4 or
1/8 when the long side stays at least `BLUR_SIDE` px (libjpeg's DCT scaling: cheaper than a full
decode, and every measure but the histogram is taken at that size anyway). This is OpenCV rather
than `core.images.load_rgb` (Pillow) for speed: measuring costs about what a bare colour decode
costs (bench/health.py). OpenCV decodes a truncated JPEG with only a warning, so a JPEG without
its end-of-image marker is reported as truncated here by that marker (the check ultralytics uses
for the same reason).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable

from .errors import DatatoolError, ImageError
from .images import MEASURE_SIDE, decode_gray, decode_gray_reduced, reduction_for  # noqa: F401  (decode_gray, reduction_for: this module's decode, for tests)
from .issues import Issue

BLUR_SIDE = MEASURE_SIDE  # = neardup.HASH_SHRINK, so one shrunk copy serves both
COLUMNS = ("width", "height", "aspect", "blur", "mean", "p5", "p95", "entropy", "phash")


@dataclass(frozen=True)
class QualityThresholds:
    """When `quality_issues` warns; the CLI option for each is `--<name with dashes>`."""

    blur: float = 100.0  # variance of the Laplacian at 256 px, below = blurry
    dark: float = 60.0  # 95th percentile luminance, below = too dark
    bright: float = 215.0  # 5th percentile luminance, above = too bright
    min_entropy: float = 4.0  # bits, below = low information
    max_aspect: float = 2.5  # long side / short side, above = extreme aspect ratio
    min_side: int = 32  # px, short side below = very small
    small_fraction: float = 0.25  # sqrt(area) below this fraction of the dataset's median = very small

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise DatatoolError(f"--{f.name.replace('_', '-')}: expected a number >= 0, got {v!r}")
        for name in ("dark", "bright"):
            if getattr(self, name) > 255:
                raise DatatoolError(f"--{name}: expected a luminance from 0 to 255, got {getattr(self, name)!r}")
        if self.min_entropy > 8:
            raise DatatoolError(f"--min-entropy: expected bits from 0 to 8, got {self.min_entropy!r}")
        if self.small_fraction > 1:
            raise DatatoolError(f"--small-fraction: expected a fraction from 0 to 1, got {self.small_fraction!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def measure_gray(gray, *, size: tuple[int, int] | None = None) -> dict:
    """The quality measures (see module doc) of a grayscale uint8 image, as a dict of `COLUMNS`.

    `size`: the image's real `(width, height)` when `gray` was decoded at a reduced scale.
    """
    import cv2
    import numpy as np

    from .neardup import phash_gray, shrink

    h, w = gray.shape[:2]
    if size is not None:
        w, h = size
    hist = cv2.calcHist([gray], [0], None, [256], [0, 256]).reshape(-1).astype(np.float64)
    total = hist.sum()
    cdf = np.cumsum(hist) / total
    p = hist[hist > 0] / total
    lo, hi = int(np.searchsorted(cdf, 0.01)), int(np.searchsorted(cdf, 0.99))
    small = shrink(gray, BLUR_SIDE)
    phash = phash_gray(small)  # the same hash as from `gray` (phash_gray shrinks to this size first)
    if hi > lo:  # stretch the 1st..99th percentile to 0..255: a dark copy is as sharp as its original
        lut = np.clip((np.arange(256) - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)
        small = cv2.LUT(small, lut)
    _, std = cv2.meanStdDev(cv2.Laplacian(small, cv2.CV_16S))  # 16 bits hold a uint8 Laplacian exactly
    blur = float(std[0, 0]) ** 2
    return {
        "width": int(w), "height": int(h), "aspect": max(w, h) / min(w, h),
        "blur": blur,
        "mean": float((hist * np.arange(256)).sum() / total),
        "p5": float(np.searchsorted(cdf, 0.05)), "p95": float(np.searchsorted(cdf, 0.95)),
        "entropy": float(-(p * np.log2(p)).sum()),
        "phash": phash,
    }


def measure(source: Path | bytes, *, name: str | None = None) -> dict:
    """Decode one image file (or its bytes, `name` in errors) in grayscale, at a reduced scale when
    it is large (`reduction_for`), and measure it; `ImageError` if it cannot be decoded."""
    gray, size = decode_gray_reduced(source, name=name, side=BLUR_SIDE)
    return measure_gray(gray, size=size)


def scan(paths: Iterable[Path], *, workers: int | None = None, progress: bool = False):
    """Measure every image, in threads (OpenCV releases the GIL while decoding).

    Returns `(table, issues)`: a pandas DataFrame indexed by the file path (str) with `COLUMNS`,
    in the order given, and an error `Issue` (code `bad-image`) for each file that does not
    decode - skipped, so the rest are still measured.
    """
    from concurrent.futures import ThreadPoolExecutor

    paths = [Path(p) for p in paths]
    workers = workers or min(8, os.cpu_count() or 1)

    def one(p: Path):
        try:
            return measure(p), None
        except ImageError as e:
            return None, Issue.from_error(e, code="bad-image", file=p)

    rows, keys, issues = [], [], []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(one, paths)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(paths), desc="measure", unit="img", leave=False)
        for p, (row, issue) in zip(paths, results):
            if issue is not None:
                issues.append(issue)
            else:
                rows.append(row)
                keys.append(str(p))
    return quality_table(dict(zip(keys, rows))), issues


def quality_table(measures):
    """`{file: measure dict}` -> the pandas DataFrame `scan` returns (indexed by file, `COLUMNS`)."""
    import pandas as pd

    table = pd.DataFrame(list(measures.values()), index=pd.Index([str(k) for k in measures], name="file"),
                         columns=list(COLUMNS))
    table["phash"] = table["phash"].astype(object)  # 64-bit unsigned values: keep Python ints
    return table


def quality_issues(table, thresholds: QualityThresholds | None = None) -> list[Issue]:
    """A warning per image and problem found in a `scan` table (see module doc), in table order."""
    t = thresholds or QualityThresholds()
    if table is None or len(table) == 0:
        return []
    side = (table["width"] * table["height"]) ** 0.5
    median_side = float(side.median())
    out = []
    for file, r in table.iterrows():
        def warn(code: str, msg: str) -> None:
            out.append(Issue("warning", str(file), "", msg, code))

        if r["blur"] < t.blur:
            warn("blurry", f"blurry: variance of the Laplacian {r['blur']:.1f} < {t.blur:g} (--blur)")
        if r["p95"] < t.dark:
            warn("dark", f"too dark: 95% of pixels below luminance {r['p95']:.0f} < {t.dark:g} (--dark); "
                         f"mean {r['mean']:.0f}")
        if r["p5"] > t.bright:
            warn("bright", f"too bright: 95% of pixels above luminance {r['p5']:.0f} > {t.bright:g} (--bright); "
                           f"mean {r['mean']:.0f}")
        if r["entropy"] < t.min_entropy:
            warn("low-information", f"low information: entropy {r['entropy']:.2f} bits < {t.min_entropy:g} "
                                    "(--min-entropy)")
        if r["aspect"] > t.max_aspect:
            warn("aspect-ratio", f"extreme aspect ratio {r['width']}x{r['height']} ({r['aspect']:.2f}:1 > "
                                 f"{t.max_aspect:g}:1, --max-aspect)")
        short = min(r["width"], r["height"])
        s = side[file]
        if short < t.min_side:
            warn("small-image", f"very small: {r['width']}x{r['height']}, short side {short} px < "
                                f"{t.min_side} (--min-side)")
        elif s < t.small_fraction * median_side:
            warn("small-image", f"very small for this dataset: {r['width']}x{r['height']}, "
                                f"{s / median_side:.0%} of the median size (< {t.small_fraction:.0%}, "
                                "--small-fraction)")
    return out


def hash_images(paths: Iterable[Path], *, data: Iterable[bytes | None] | None = None,
                workers: int | None = None) -> tuple[dict[str, int], list[Issue]]:
    """`({file path: phash}, issues)` for every image (`phash_image`), decoded in threads; only the
    perceptual hash (for near-duplicate grouping when the quality measures are not wanted).
    `data`: each file's bytes when already read (None where not), so they are not read again.
    Files that do not decode are error `Issue`s (code `bad-image`) and left out.

    Hashes are looked up first in the persistent cache (`core.hashcache`, keyed by the sha256 of
    the bytes, which costs a twentieth of a decode); only the images it does not know are decoded,
    and their hashes are added to it."""
    from concurrent.futures import ThreadPoolExecutor

    from .hashcache import HashCache
    from .images import read_image_bytes, sha256_bytes
    from .neardup import HASH_VERSION, phash_image

    paths = [Path(p) for p in paths]
    blobs = list(data) if data is not None else [None] * len(paths)
    if len(blobs) != len(paths):
        raise ValueError("hash_images: data must hold one entry per path")

    def read(job):
        p, blob = job
        try:
            blob = read_image_bytes(p) if blob is None else blob
        except ImageError as e:
            return None, None, Issue.from_error(e, code="bad-image", file=p)
        return blob, sha256_bytes(blob), None

    def one(job):
        p, blob = job
        try:
            return phash_image(blob, name=str(p)), None
        except ImageError as e:
            return None, Issue.from_error(e, code="bad-image", file=p)

    hashes, issues = {}, []
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool, \
            HashCache(HASH_VERSION) as cache:
        read_back = list(pool.map(read, zip(paths, blobs)))
        known = cache.get_many(d for _, d, _ in read_back if d) if cache.active else {}
        todo = []
        for p, (blob, digest, issue) in zip(paths, read_back):
            if issue is not None:
                issues.append(issue)
            elif digest in known:
                hashes[str(p)] = known[digest]
            else:
                todo.append((p, blob, digest))
        made = {}
        for (p, _, digest), (h, issue) in zip(todo, pool.map(one, [(p, b) for p, b, _ in todo])):
            if issue is None:
                hashes[str(p)] = made[digest] = h
            else:
                issues.append(issue)
        cache.put_many(made)
    order = {str(p): i for i, p in enumerate(paths)}
    issues.sort(key=lambda i: order.get(i.file, 0))
    return {k: hashes[k] for k in sorted(hashes, key=order.__getitem__)}, issues
