"""Image quality checks on real photos (scikit-image) and their blurred / darkened copies."""

from __future__ import annotations

import numpy as np
import pytest

from datatool.core.errors import DatatoolError
from datatool.core.quality import QualityThresholds, quality_issues, scan


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Five photos as JPEGs, plus a blurred (sigma 3) and a darkened (x0.2) copy of the first two."""
    import cv2
    from skimage import data

    root = tmp_path_factory.mktemp("quality")
    paths = {}
    for name in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry"):
        rgb = getattr(data, name)()[..., :3]
        paths[name] = root / f"{name}.jpg"
        cv2.imwrite(str(paths[name]), rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
        if name in ("astronaut", "coffee"):
            paths[f"{name}_blur"] = root / f"{name}_blur.jpg"
            cv2.imwrite(str(paths[f"{name}_blur"]), cv2.GaussianBlur(rgb, (0, 0), 3)[..., ::-1])
            paths[f"{name}_dark"] = root / f"{name}_dark.jpg"
            cv2.imwrite(str(paths[f"{name}_dark"]), (rgb * 0.2).astype(np.uint8)[..., ::-1])
    return paths


def flagged(issues, code):
    from pathlib import Path

    return sorted(Path(i.file).stem for i in issues if i.code == code)


def test_blurred_and_darkened_copies_are_flagged_and_originals_are_not(photos):
    table, bad = scan(photos.values(), workers=2)
    assert bad == [] and len(table) == len(photos)
    issues = quality_issues(table)
    assert flagged(issues, "blurry") == ["astronaut_blur", "coffee_blur"]
    assert flagged(issues, "dark") == ["astronaut_dark", "coffee_dark"]
    assert flagged(issues, "bright") == [] and flagged(issues, "aspect-ratio") == []
    msg = next(i.message for i in issues if i.code == "blurry")
    assert "variance of the Laplacian" in msg and "(--blur)" in msg  # the measured value and its option


def test_flat_tiny_and_panoramic_images_are_flagged(tmp_path, photos):
    import cv2

    cv2.imwrite(str(tmp_path / "flat.png"), np.full((300, 300), 128, np.uint8))
    cv2.imwrite(str(tmp_path / "tiny.png"), np.random.default_rng(0).integers(0, 255, (20, 24), np.uint8))
    cv2.imwrite(str(tmp_path / "pano.png"), np.random.default_rng(1).integers(0, 255, (100, 400), np.uint8))
    files = list(photos.values()) + [tmp_path / n for n in ("flat.png", "tiny.png", "pano.png")]
    table, _ = scan(files, workers=1)
    issues = quality_issues(table)
    assert "flat" in flagged(issues, "low-information")
    assert flagged(issues, "small-image") == ["tiny"]
    assert flagged(issues, "aspect-ratio") == ["pano"]


def test_size_is_judged_against_the_dataset_median(tmp_path):
    import cv2

    rng = np.random.default_rng(0)
    for k in range(4):
        cv2.imwrite(str(tmp_path / f"big{k}.png"), rng.integers(0, 255, (400, 400), np.uint8))
    cv2.imwrite(str(tmp_path / "thumb.png"), rng.integers(0, 255, (60, 60), np.uint8))  # >= min_side
    table, _ = scan(sorted(tmp_path.glob("*.png")))
    assert flagged(quality_issues(table), "small-image") == ["thumb"]


def test_corrupt_and_truncated_images_are_reported_by_name_and_skipped(tmp_path, photos):
    good = photos["astronaut"]
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    data = good.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    table, bad = scan([good, tmp_path / "junk.jpg", tmp_path / "cut.jpg"])
    assert list(table.index) == [str(good)]
    assert {(i.file, i.code) for i in bad} == {(str(tmp_path / "junk.jpg"), "bad-image"),
                                               (str(tmp_path / "cut.jpg"), "bad-image")}
    assert any("truncated" in i.message for i in bad)


@pytest.mark.parametrize("kwargs, option", [({"blur": -1}, "--blur"), ({"dark": 300}, "--dark"),
                                            ({"min_entropy": 9}, "--min-entropy"),
                                            ({"small_fraction": 2}, "--small-fraction")])
def test_thresholds_out_of_range_name_their_option(kwargs, option):
    with pytest.raises(DatatoolError, match=option):
        QualityThresholds(**kwargs)


def test_hash_images_gives_the_hashes_scan_gives(photos):  # one decode rule for both
    from datatool.core.quality import hash_images

    table, _ = scan(photos.values())
    hashes, bad = hash_images(photos.values())
    assert bad == [] and hashes == dict(zip(table.index, table["phash"]))


def test_a_reduced_decode_measures_like_a_full_one(photos):
    from datatool.core.neardup import hamming
    from datatool.core.quality import decode_gray, measure_gray, reduction_for

    for name in ("astronaut", "astronaut_blur", "coffee_dark"):
        full = measure_gray(decode_gray(photos[name]))
        assert reduction_for(full["width"], full["height"]) == 2  # 512 px: half is still 256
        half = measure_gray(decode_gray(photos[name], reduce=2), size=(full["width"], full["height"]))
        assert (half["width"], half["height"]) == (full["width"], full["height"])
        assert hamming(half["phash"], full["phash"]) <= 4
        assert abs(half["mean"] - full["mean"]) < 2 and abs(half["p95"] - full["p95"]) <= 3
        assert (half["blur"] < 100) == (full["blur"] < 100)  # same verdict at the default --blur
        assert 0.4 < half["blur"] / full["blur"] < 2.5
