"""Near-duplicate images: a 64-bit perceptual hash per image and a search for every pair of
hashes within a Hamming distance that is not quadratic in the number of images.

The hash is `imagehash.phash` (8x8 = 64 bits: the signs of the low-frequency DCT of a 32x32
grayscale thumbnail against their median) - the well-kept library that cleanvision uses too.
Hashes are held as Python ints / numpy uint64 so they can be stored in JSON and compared with
a XOR and a popcount.

Search: multi-index hashing by bands. Split the 64 bits into `distance + 1` bands; two hashes
within `distance` bits of each other differ in at most `distance` bands, so by the pigeonhole
principle they agree exactly on at least one. Sorting the hashes on each band puts every such
pair inside a run of equal band values, and only pairs inside runs are compared (with numpy),
which finds *every* pair within `distance`, never more, in about n log n plus the size of the
runs (100,000 random hashes at the default distance: see bench/health.py).

The default distance (`DEFAULT_DISTANCE`) was measured with bench/health.py's
`--measure-distance` on scikit-image's photos and generated scenes: a frame shifted by 2-8 px
and re-encoded as JPEG (quality 70-95) lands at 0-6 bits from the original, slight brightness
changes at 0-2, while different photos and scenes sit at 20-40 bits (random 64-bit hashes
average 32 +- 4). 8 leaves margin on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from .errors import DatatoolError

HASH_BITS = 64
HASH_VERSION = "phash-1"  # bump when decoding or hashing changes: `core.hashcache` keys on it
DEFAULT_DISTANCE = 8
MAX_DISTANCE = 16  # beyond this, unrelated photos start to match by chance (32 +- 4 bits apart)


def check_distance(distance: int, *, option: str = "--near-dup-distance") -> int:
    """`distance` as an int in [0, MAX_DISTANCE], or a `DatatoolError` naming the option."""
    if isinstance(distance, bool) or not isinstance(distance, int) or not 0 <= distance <= MAX_DISTANCE:
        raise DatatoolError(f"{option}: expected a whole number of bits from 0 to {MAX_DISTANCE} "
                            f"(Hamming distance between 64-bit perceptual hashes), got {distance!r}")
    return distance


HASH_SHRINK = 256  # px: images are first shrunk so their long side is this (quality.py's working copy)


def shrink(gray, side: int = HASH_SHRINK):
    """The image shrunk (area filter) so its long side is `side` px; unchanged if already smaller."""
    import cv2

    h, w = gray.shape[:2]
    f = side / max(h, w)
    if f >= 1:
        return gray
    return cv2.resize(gray, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)


def phash_gray(gray) -> int:
    """The 64-bit `imagehash.phash` of a grayscale uint8 image (height, width), as an int.

    The image is first shrunk with OpenCV's area filter (pixel averaging, cheap) to a long side of
    `HASH_SHRINK` px, then to 64x64; `phash` then takes its own 32x32 thumbnail of that, so the hash
    is the library's. The same steps whatever the caller passes, so hashes always compare.
    """
    import cv2
    import imagehash
    import numpy as np
    from PIL import Image

    small = shrink(gray)
    small = cv2.resize(small, (64, 64), interpolation=cv2.INTER_AREA) if small.shape != (64, 64) else small
    bits = imagehash.phash(Image.fromarray(small)).hash.reshape(-1)
    return int.from_bytes(np.packbits(bits).tobytes(), "big")



def phash_image(source, *, name: str | None = None) -> int:
    """The perceptual hash (`phash_gray`) of an image file or its bytes (`name` in errors): the one
    hash every caller uses (validate's and split's near-duplicate checks, inspect's leak check on
    TFRecord images), decoded as `core.quality.measure` decodes (`core.images.decode_gray_reduced`),
    so `scan`'s `phash` column equals it and a dataset's hashes compare with its records'.
    `ImageError` if it cannot be decoded.

    The decode is reduced (1/2, 1/4 or 1/8 while the long side stays >= 256 px); the hash only
    needs a 32x32 thumbnail. Measured against a full decode (JPEG quality 90): scikit-image's
    photos (384-2000 px) hash 0-2 bits apart at 1/2 (4 on brick at 512 px), 0-2 at 1/4 and 0-4
    at 1/8; generated 640x480 and 1280x960 scenes 0 bits at every scale - well inside
    `DEFAULT_DISTANCE` (8). A larger reduction saves little: on 640x480 webcam-like JPEGs, decoding
    at 1/2, 1/4, 1/8 costs 0.73, 0.71, 0.62 ms against 0.81 ms in full (Huffman decoding, which no
    scale skips, dominates), so the scale the quality measures need serves the hash too.
    """
    from .images import decode_gray_reduced

    return phash_gray(decode_gray_reduced(source, name=name, side=HASH_SHRINK)[0])


def hamming(a: int, b: int) -> int:
    return (int(a) ^ int(b)).bit_count()


def _bands(count: int) -> list[tuple[int, int]]:
    """`count` (shift, width) bands covering the 64 bits, as equal as possible."""
    widths = [HASH_BITS // count + (1 if i < HASH_BITS % count else 0) for i in range(count)]
    out, shift = [], 0
    for w in widths:
        out.append((shift, w))
        shift += w
    return out


DENSE_BITS = 22  # bands this narrow are looked up in a table of 2**width counts instead of a binary search


def _flips(width: int, radius: int) -> list[int]:
    """Every bit mask of `width` bits with at most `radius` bits set (0 first)."""
    from itertools import combinations

    return [sum(1 << b for b in bits) for r in range(radius + 1) for bits in combinations(range(width), r)]


def _plan(n: int, distance: int) -> tuple[int, int]:
    """`(bands, radius)` with the least expected work for `n` uniform hashes.

    Pigeonhole: two hashes within `distance` bits, cut into `bands` bands, agree within
    `distance // bands` bits on at least one band. Work per band: one lookup per hash per flip
    mask, plus the candidates met (n * n / 2**width per flip mask).
    """
    from math import comb, log2

    best = None
    for bands in range(1, distance + 2):
        radius = distance // bands
        width = HASH_BITS // bands
        flips = sum(comb(width, r) for r in range(radius + 1))
        dense = width <= DENSE_BITS
        lookup = 1.0 if dense else max(1.0, log2(max(n, 2)))
        cost = bands * (2.0 ** width if dense else 0) + bands * flips * (n * lookup + 3 * n * n / 2.0 ** width)
        if best is None or cost < best[0]:
            best = (cost, bands, radius)
    return best[1], best[2]


def pairs_within(hashes: Sequence[int], distance: int, *, chunk: int = 1 << 22):
    """Every pair `(i, j)`, i < j, of positions whose hashes differ in at most `distance` bits.

    Multi-index hashing: the hashes are sorted on each band, and for each hash every band value
    within the band's radius is looked up with a binary search; only the hashes met there are
    compared in full. Returns two int64 numpy arrays `(i, j)`, each pair once, sorted.
    """
    import numpy as np

    check_distance(distance, option="distance")
    h = np.fromiter((int(x) for x in hashes), dtype=np.uint64, count=len(hashes))
    n = len(h)
    found_i, found_j = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    if n >= 2:
        count, radius = _plan(n, distance)
        for shift, width in _bands(count):
            key = (h >> np.uint64(shift)) & np.uint64((1 << width) - 1)
            order = np.argsort(key, kind="stable")
            sorted_key = key[order]
            dense = width <= DENSE_BITS
            if dense:
                # A bool table (a few MB) answers "is this band value present?" from cache; only the
                # few hashes that hit one read the larger start/count tables.
                table = np.bincount(key.astype(np.intp), minlength=1 << width)
                starts = np.cumsum(table) - table
                present = table > 0
            for flip in _flips(width, radius):
                probe = key ^ np.uint64(flip)
                if dense:
                    probe = probe.astype(np.intp)
                    xs = np.flatnonzero(present[probe])
                    lo, hits = starts[probe[xs]], table[probe[xs]]
                else:
                    lo = np.searchsorted(sorted_key, probe, "left")
                    hits = np.searchsorted(sorted_key, probe, "right") - lo
                    xs = np.flatnonzero(hits)
                    lo, hits = lo[xs], hits[xs]
                # Expand (hash, run of equal band values) into pairs, about `chunk` pairs at a time.
                ends = np.cumsum(hits)
                a = 0
                while a < len(xs):
                    base = ends[a - 1] if a else 0
                    b = max(a + 1, int(np.searchsorted(ends, base + chunk, "right")))
                    cnt = hits[a:b]
                    total = int(cnt.sum())
                    xi = np.repeat(xs[a:b], cnt)
                    offs = np.arange(total) - np.repeat(np.cumsum(cnt) - cnt, cnt)
                    yj = order[np.repeat(lo[a:b], cnt) + offs]
                    keep = xi < yj
                    xi, yj = xi[keep], yj[keep]
                    close = np.bitwise_count(h[xi] ^ h[yj]) <= distance
                    found_i.append(xi[close].astype(np.int64))
                    found_j.append(yj[close].astype(np.int64))
                    a = b
    i = np.concatenate(found_i)
    j = np.concatenate(found_j)
    if not len(i):
        return i, j
    pairs = np.unique(np.stack([i, j], 1), axis=0)
    return pairs[:, 0], pairs[:, 1]


def clusters(hashes: Sequence[int], distance: int) -> list[list[int]]:
    """Positions grouped into near-duplicate clusters (connected components of "within `distance`").

    Only clusters of two or more are returned, each sorted, largest first then by first position.
    Connected components are transitive: A~B and B~C put A, B, C together even if A and C are
    farther apart - what a leak check needs (a slow pan from A to C is one scene).
    """
    i, j = pairs_within(hashes, distance)
    parent = list(range(len(hashes)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(i.tolist(), j.tolist()):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    comps: dict[int, list[int]] = {}
    for x in range(len(hashes)):
        comps.setdefault(find(x), []).append(x)
    out = [c for c in comps.values() if len(c) > 1]
    return sorted(out, key=lambda c: (-len(c), c[0]))


@dataclass(frozen=True)
class Cluster:
    """Near-duplicate images: their keys (as given) and the largest distance within a linked pair."""

    keys: tuple[str, ...]
    max_distance: int

    def to_dict(self) -> dict:
        return {"keys": list(self.keys), "max_distance": self.max_distance}


def near_duplicate_clusters(hashes: Mapping[str, int], distance: int) -> list[Cluster]:
    """Clusters of near-duplicate keys from `{key: phash}` (keys e.g. image ids or file paths)."""
    check_distance(distance)
    keys = list(hashes)
    values = [hashes[k] for k in keys]
    out = []
    for comp in clusters(values, distance):
        members = [keys[x] for x in comp]
        worst = max(min(hamming(values[a], values[b]) for b in comp if b != a) for a in comp)
        out.append(Cluster(tuple(members), worst))
    return out


def near_duplicate_issues(hashes: Mapping[str, int], distance: int = DEFAULT_DISTANCE, *,
                          relative_to=None) -> list:
    """One warning `Issue` per near-duplicate cluster, naming every image in it.

    `hashes` maps an image's file path (what `Issue.file` holds) to its phash. The issue's file is
    the cluster's first image; its message lists the others, relative to the folder `relative_to`
    when given (e.g. the dataset's images folder).
    """
    import os

    from .issues import Issue

    def show(key: str) -> str:
        if relative_to is None:
            return key
        rel = os.path.relpath(key, relative_to)
        return key if rel.startswith("..") else rel

    issues = []
    for c in near_duplicate_clusters(hashes, distance):
        others = ", ".join(show(k) for k in c.keys[1:])
        issues.append(Issue("warning", c.keys[0], "",
                            f"near duplicate: {len(c.keys)} images within {distance} bits of each other "
                            f"(phash; closest-neighbour distance up to {c.max_distance}): {others}",
                            "near-duplicate"))
    return issues


def group_near_duplicates(units: Mapping[str, str], hashes: Mapping[str, int],
                          distance: int = DEFAULT_DISTANCE) -> tuple[dict[str, str], int]:
    """Merge split units that hold near-duplicate images, so a scene never straddles two splits.

    `units` maps each image key to its leakage unit (group or session); `hashes` maps image keys
    to phashes (keys missing from it keep their unit). Returns `(new_units, merged)`: every image's
    merged unit (the smallest unit name of its cluster of units, so the result does not depend on
    order) and how many units disappeared into others.
    """
    check_distance(distance)
    keys = [k for k in units if k in hashes]
    names = sorted(set(units.values()))
    parent = {u: u for u in names}

    def find(u: str) -> str:
        while parent[u] != u:
            parent[u] = parent[parent[u]]
            u = parent[u]
        return u

    i, j = pairs_within([hashes[k] for k in keys], distance)
    for a, b in zip(i.tolist(), j.tolist()):
        ra, rb = find(units[keys[a]]), find(units[keys[b]])
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    new_units = {k: find(u) for k, u in units.items()}
    merged = len(names) - len(set(new_units.values()))
    return new_units, merged


@dataclass(frozen=True)
class Leak:
    """A val/test record that is a near duplicate of a train record."""

    split: str
    key: str
    train_key: str
    distance: int

    def to_dict(self) -> dict:
        return {"split": self.split, "key": self.key, "train_key": self.train_key, "distance": self.distance}


def find_leaks(records: Iterable[tuple[str, str, int]], distance: int = DEFAULT_DISTANCE) -> list[Leak]:
    """Every non-train record within `distance` bits of a train record, with its closest train match.

    `records`: `(split, key, phash)` triples. Groups and sessions are ignored on purpose: two
    captures of the same scene in different sessions are still a leak.
    """
    check_distance(distance)
    records = list(records)
    i, j = pairs_within([r[2] for r in records], distance)
    best: dict[int, tuple[int, int]] = {}
    for a, b in zip(i.tolist(), j.tolist()):
        for x, y in ((a, b), (b, a)):
            if records[x][0] != "train" and records[y][0] == "train":
                d = hamming(records[x][2], records[y][2])
                if x not in best or (d, records[y][1]) < (best[x][0], records[best[x][1]][1]):
                    best[x] = (d, y)
    leaks = [Leak(records[x][0], records[x][1], records[y][1], d) for x, (d, y) in best.items()]
    return sorted(leaks, key=lambda lk: (lk.split, lk.key))


def tfrecord_hashes(tfdir, *, splits: Sequence[str] | None = None, issues: list | None = None,
                    thumbnails: dict | None = None, thumb_side: int = 160):
    """`(split, source_id, phash)` for every record of a TFDIR (`phash_image`, the hash
    `validate` and `split` take of the dataset's files, so the two compare).

    A record whose image does not decode is reported in `issues` (shard and index) and skipped.
    With a `thumbnails` dict, a JPEG thumbnail (long side `thumb_side`) of each record's image is
    stored in it under `(split, source_id)` (the report shows leaks with them).
    """
    from pathlib import Path

    import cv2
    import numpy as np

    from .errors import ImageError
    from .issues import Issue
    from .tfrecord import SPLITS, list_shards, shard_records

    tfdir = Path(tfdir)
    if not tfdir.is_dir():
        raise DatatoolError(f"{tfdir}: TFRecord folder not found")
    import tensorflow as tf
    spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string),
            "image/source_id": tf.io.FixedLenFeature([], tf.string, default_value="")}
    out = []
    for split in splits or SPLITS:
        for shard in list_shards(tfdir, split):
            for k, raw in shard_records(shard):
                if isinstance(raw, tf.errors.OpError):  # a truncated or corrupt shard: report it, keep the rest
                    if issues is not None:
                        issues.append(Issue("error", str(shard), f"record {k}",
                                            f"cannot read further ({type(raw).__name__})", "bad-record"))
                    break
                try:
                    ex = tf.io.parse_single_example(raw, spec)
                except tf.errors.InvalidArgumentError as e:
                    if issues is not None:
                        issues.append(Issue("error", str(shard), f"record {k}", f"does not parse ({e.message})",
                                            "bad-record"))
                    continue
                data = ex["image/encoded"].numpy()
                key = ex["image/source_id"].numpy().decode("utf-8", "replace") or f"{shard.name}#{k}"
                try:  # the dataset's own hash function, so records compare with `validate`'s and `split`'s hashes
                    h = phash_image(data, name=f"{shard}: record {k}")
                except ImageError:
                    if issues is not None:
                        issues.append(Issue("error", str(shard), f"record {k}", "image does not decode", "bad-record"))
                    continue
                if thumbnails is not None:
                    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                    f = thumb_side / max(img.shape[:2])
                    small = cv2.resize(img, (max(1, round(img.shape[1] * f)), max(1, round(img.shape[0] * f))),
                                       interpolation=cv2.INTER_AREA) if f < 1 else img
                    thumbnails[(split, key)] = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()
                out.append((split, key, h))
    return out


def tfrecord_leaks(tfdir, distance: int = DEFAULT_DISTANCE, *, issues: list | None = None,
                   thumbnails: dict | None = None) -> list[Leak]:
    """Every val/test record of a TFDIR whose image is within `distance` bits of a train record's
    (`inspect`'s leak check: images, not group ids, so different groups and sessions leak too)."""
    check_distance(distance)
    return find_leaks(tfrecord_hashes(tfdir, issues=issues, thumbnails=thumbnails), distance)
