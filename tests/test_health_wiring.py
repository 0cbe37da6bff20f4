"""The health checks inside the existing commands: validate (near duplicates, image quality),
inspect (near-duplicate leaks, --strict), split (--group-near-duplicates), label (--only-suspects)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from datatool.cli import cli
from tests.healthdata import moved, save, scene, scene_pairs


def test_validate_reports_near_duplicate_clusters_and_quality_warnings(tmp_path):
    images = tmp_path / "ds" / "images"
    rgb = scene(1)
    save(images / "frame.jpg", rgb)
    save(images / "frame_later.jpg", moved(rgb), quality=75)
    save(images / "other.jpg", scene(2))
    save(images / "blurred.jpg", cv2.GaussianBlur(scene(3), (0, 0), 6))
    save(images / "dark.jpg", (scene(4) * 0.15).astype(np.uint8))
    out = tmp_path / "v.json"
    res = CliRunner().invoke(cli, ["validate", str(tmp_path / "ds"), "--json", str(out)])
    assert res.exit_code == 0, res.output
    issues = json.loads(out.read_text())["issues"]
    near = [i for i in issues if i["code"] == "near-duplicate"]
    assert len(near) == 1 and near[0]["file"].endswith("frame.jpg") and "frame_later.jpg" in near[0]["message"]
    assert "near duplicate" in near[0]["message"]
    flagged = {(i["code"], i["file"].rsplit("/", 1)[-1]) for i in issues if i["code"] in ("blurry", "dark")}
    assert ("blurry", "blurred.jpg") in flagged and ("dark", "dark.jpg") in flagged
    assert not any(f in ("frame.jpg", "other.jpg") for _, f in flagged)
    res = CliRunner().invoke(cli, ["validate", str(tmp_path / "ds"), "--no-health"])
    assert "near duplicate" not in res.output


def test_an_exact_copy_stays_a_duplicate_and_is_not_a_near_duplicate_too(tmp_path):
    import shutil

    images = tmp_path / "ds" / "images"
    save(images / "a.jpg", scene(1))
    shutil.copy(images / "a.jpg", images / "a_copy.jpg")
    out = tmp_path / "v.json"
    CliRunner().invoke(cli, ["validate", str(tmp_path / "ds"), "--json", str(out)])
    codes = [i["code"] for i in json.loads(out.read_text())["issues"]]
    assert codes.count("duplicate-image") == 1 and "near-duplicate" not in codes


@pytest.mark.parametrize("bad", ["-1", "17"])
def test_validate_near_dup_distance_out_of_range_is_a_clear_error(tiny_dataset, bad):
    res = CliRunner().invoke(cli, ["validate", str(tiny_dataset), "--near-dup-distance", bad])
    assert res.exit_code != 0 and "--near-dup-distance" in res.output and "Traceback" not in res.output


def leaks_after_split(tmp_path, *flags):
    """Split the 12-scene dataset (each scene captured twice, every capture its own group) and
    return the near-duplicate leaks `inspect --json` finds, and the split command's output."""
    root = tmp_path / "ds"
    if not root.exists():
        scene_pairs(root, n=12)
    out = tmp_path / ("tf" + "".join(flags).replace("-", ""))
    runner = CliRunner()
    res = runner.invoke(cli, ["split", str(root), "--out", str(out), "--ratios", "0.5,0.25,0.25", "--seed", "0",
                              *flags])
    assert res.exit_code == 0, res.output
    report = tmp_path / f"{out.name}.json"
    ins = runner.invoke(cli, ["inspect", str(out), "--json", str(report)])
    assert ins.exit_code == 0, ins.output  # leaks alone do not fail inspect without --strict
    strict = runner.invoke(cli, ["inspect", str(out), "--strict"])
    return json.loads(report.read_text())["near_duplicate_leaks"], res.output, strict.exit_code


def test_split_leaks_near_duplicates_without_grouping_and_not_with_it(tmp_path):
    leaks, _, strict_code = leaks_after_split(tmp_path)
    assert leaks, "seed 0 puts some scene's two captures in different splits"
    assert all(lk["key"][:3] == lk["train_key"][:3] for lk in leaks)  # s07_b.jpg leaks s07_a.jpg
    assert strict_code == 1
    leaks, output, strict_code = leaks_after_split(tmp_path, "--group-near-duplicates")
    assert leaks == [] and strict_code == 0
    assert "near-duplicate grouping: 12 unit(s) merged" in output


def test_group_near_duplicates_is_for_detection_only(tmp_path):
    res = CliRunner().invoke(cli, ["split", str(tmp_path), "--out", str(tmp_path / "tf"), "--task", "identity",
                                   "--group-near-duplicates"])
    assert res.exit_code == 1 and "detection datasets only" in res.output


def test_label_only_suspects_opens_labelme_on_just_the_suspects(tmp_path):
    from tests.conftest import write_image, write_labelme_json

    images = tmp_path / "ds" / "images"
    for k in range(3):
        write_labelme_json(write_image(images / f"a{k}.jpg", seed=k), [], width=64, height=48)
    audit = tmp_path / "audit.json"
    audit.write_text(json.dumps({"kind": "facekit-audit", "version": 1, "dataset": str(tmp_path / "ds"),
                                 "detector": "haar", "images": 3, "suspects": [
                                     {"image": str(images / "a2.jpg"), "image_id": "a2.jpg", "reason": "no-face",
                                      "box": [1, 2, 30, 40], "score": 0.6}]}))
    res = CliRunner().invoke(cli, ["label", str(tmp_path / "ds"), "--only-suspects", str(audit), "--dry-run"])
    assert res.exit_code == 0, res.output
    folder = images / ".facekit-suspects"
    assert f"{folder} --labels face --output {folder}" in res.output
    assert sorted(p.name for p in folder.iterdir()) == ["a2.jpg", "a2.json"]
