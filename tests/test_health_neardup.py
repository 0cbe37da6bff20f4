"""Near-duplicate search: perceptual hashes of generated frames, the banded search against brute
force, clusters, split-unit merging and leaks."""

from __future__ import annotations

import numpy as np
import pytest

from datatool.core.errors import DatatoolError
from datatool.core.neardup import (DEFAULT_DISTANCE, MAX_DISTANCE, check_distance, clusters, find_leaks,
                                   group_near_duplicates, hamming, near_duplicate_issues, pairs_within, phash_gray)


def scene(seed: int, h: int = 240, w: int = 320):
    """A smooth random 'scene': a few blurred blobs of light on a gradient (grayscale uint8)."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.tile(np.linspace(30, 120, w), (h, 1)) + rng.uniform(-20, 20)
    for _ in range(6):
        cx, cy, r = rng.integers(0, w), rng.integers(0, h), rng.integers(15, 60)
        cv2.circle(img, (int(cx), int(cy)), int(r), float(rng.integers(60, 255)), -1)
    img = cv2.GaussianBlur(img, (0, 0), 3) + rng.normal(0, 4, (h, w))
    return np.clip(img, 0, 255).astype(np.uint8)


def shifted_reencoded(gray, dx: int = 4, dy: int = 3, quality: int = 75):
    """The same frame moved by (dx, dy) px (edge repeated) and re-encoded as JPEG."""
    import cv2

    m = np.float32([[1, 0, dx], [0, 1, dy]])
    moved = cv2.warpAffine(gray, m, gray.shape[::-1], borderMode=cv2.BORDER_REPLICATE)
    ok, buf = cv2.imencode(".jpg", moved, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)


def test_shifted_reencoded_frame_is_a_near_duplicate_and_other_scenes_are_not():
    frames = {f"scene{k}": scene(k) for k in range(6)}
    hashes = {name: phash_gray(g) for name, g in frames.items()}
    hashes["scene0_moved"] = phash_gray(shifted_reencoded(frames["scene0"]))
    assert hamming(hashes["scene0"], hashes["scene0_moved"]) <= DEFAULT_DISTANCE
    issues = near_duplicate_issues(hashes)
    assert len(issues) == 1, [str(i) for i in issues]
    assert issues[0].file == "scene0" and "scene0_moved" in issues[0].message
    assert issues[0].code == "near-duplicate" and "near duplicate" in issues[0].message


def random_hashes(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2**64 - 1, size=n, dtype=np.uint64, endpoint=True)


@pytest.mark.parametrize("distance", [0, 1, 3, 8, 12, 16])
def test_banded_search_finds_exactly_the_pairs_brute_force_finds(distance):
    rng = np.random.default_rng(distance)
    base = random_hashes(400, seed=distance)
    # planted near copies: 0..15 random bits flipped, so some fall inside and some outside `distance`
    flips = np.array([sum(1 << int(b) for b in rng.choice(64, k, replace=False)) for k in rng.integers(0, 16, 400)],
                     dtype=np.uint64)
    h = np.concatenate([base, base ^ flips, base[:5]])  # and 5 exact copies
    i, j = pairs_within([int(x) for x in h], distance)
    d = np.bitwise_count(h[:, None] ^ h[None, :])
    bi, bj = np.nonzero(np.triu(d <= distance, 1))
    assert sorted(zip(i.tolist(), j.tolist())) == sorted(zip(bi.tolist(), bj.tolist()))


def test_clusters_are_transitive_and_singletons_are_left_out():
    a = 0
    b = a ^ 0b111  # 3 bits from a
    c = b ^ (0b111 << 10)  # 3 from b, 6 from a
    far = (1 << 64) - 1
    assert clusters([a, far, b, c], 3) == [[0, 2, 3]]


@pytest.mark.parametrize("bad", [-1, MAX_DISTANCE + 1, 2.5, "8", True])
def test_distance_out_of_range_is_a_clear_error(bad):
    with pytest.raises(DatatoolError, match=r"--near-dup-distance: expected a whole number of bits from 0 to 16"):
        check_distance(bad)


def test_group_near_duplicates_merges_units_holding_near_duplicate_images():
    units = {"a.jpg": "g1", "a2.jpg": "g2", "b.jpg": "g3", "b_aug.jpg": "g3"}
    hashes = {"a.jpg": 0, "a2.jpg": 0b11, "b.jpg": (1 << 64) - 1}  # b_aug unmeasured: keeps its unit
    new, merged = group_near_duplicates(units, hashes, 4)
    assert merged == 1
    assert new == {"a.jpg": "g1", "a2.jpg": "g1", "b.jpg": "g3", "b_aug.jpg": "g3"}


def test_leaks_report_test_and_val_records_close_to_a_train_record_only():
    records = [("train", "t1", 0), ("train", "t2", (1 << 64) - 1), ("test", "x1", 0b1),
               ("val", "v1", 0xFFFF_0000_FFFF_0000), ("test", "x2", 0b11), ("val", "v2", 0b1)]
    leaks = find_leaks(records, 4)
    assert [(lk.split, lk.key, lk.train_key, lk.distance) for lk in leaks] == [
        ("test", "x1", "t1", 1), ("test", "x2", "t1", 2), ("val", "v2", "t1", 1)]


def test_tfrecord_hashes_report_a_truncated_shard_and_keep_the_rest(detection_tfrecords, tmp_path):
    import shutil

    from datatool.core.neardup import tfrecord_hashes

    tf = tmp_path / "tf"
    shutil.copytree(detection_tfrecords, tf)
    whole = tfrecord_hashes(tf)
    shard = sorted(tf.glob("test-*.tfrecord"))[0]
    shard.write_bytes(shard.read_bytes()[:-100])
    issues = []
    cut = tfrecord_hashes(tf, issues=issues)
    assert 0 < len(whole) - len(cut) <= 2
    assert [(i.file, i.code) for i in issues] == [(str(shard), "bad-record")]
