"""`audit` on real face photos (scikit-image's astronaut) where the Haar detector is right: a
deleted box, a shifted box and an invented box are found and ranked; correct labels are not."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from datatool.cli import cli
from tests.conftest import write_labelme_json

FACE = (177.0, 67.0, 270.0, 160.0)  # Haar's box on skimage.data.astronaut(), 512x512


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """A dataset of astronaut photos with one mistake each in three of them, and its audit JSON."""
    import cv2
    from skimage import data

    root = tmp_path_factory.mktemp("audit") / "ds"
    images = root / "images"
    images.mkdir(parents=True)
    rgb = data.astronaut()
    flipped = np.ascontiguousarray(rgb[:, ::-1])
    face_flipped = (512 - FACE[2], FACE[1], 512 - FACE[0], FACE[3])
    cases = {
        "ok.jpg": (rgb, [FACE]),
        "ok_flipped.jpg": (flipped, [face_flipped]),
        "deleted.jpg": (flipped, []),  # the face's box was deleted: a negative that is not
        "shifted.jpg": (rgb, [(FACE[0] + 45, FACE[1] + 10, FACE[2] + 45, FACE[3] + 10)]),
        "invented.jpg": (rgb, [FACE, (20.0, 420.0, 110.0, 500.0)]),  # a box on the suit, no face
    }
    for name, (img, boxes) in cases.items():
        cv2.imwrite(str(images / name), img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
        write_labelme_json(images / name, boxes, width=512, height=512)
    out = root.parent / "audit.json"
    grid = root.parent / "suspects.png"
    res = CliRunner().invoke(cli, ["audit", str(root), "--detector", "haar", "--json", str(out), "--grid", str(grid)])
    return res, json.loads(out.read_text()), grid


def test_audit_finds_the_deleted_shifted_and_invented_boxes_only(audited):
    res, doc, _ = audited
    assert res.exit_code == 0, res.output
    found = {(s["image_id"], s["reason"]) for s in doc["suspects"]}
    assert found == {("deleted.jpg", "missed-face"), ("shifted.jpg", "loose-box"), ("invented.jpg", "no-face")}
    assert doc["images"] == 5 and doc["detector"] == "haar"


def test_suspects_are_ranked_with_box_reason_and_score(audited):
    _, doc, _ = audited
    scores = [s["score"] for s in doc["suspects"]]
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)
    invented = next(s for s in doc["suspects"] if s["reason"] == "no-face")
    assert invented["box"] == [20.0, 420.0, 110.0, 500.0]
    shifted = next(s for s in doc["suspects"] if s["reason"] == "loose-box")
    assert 0.1 <= shifted["iou"] < 0.5


def test_audit_prints_a_table_and_draws_the_grid(audited):
    res, _, grid = audited
    assert "missed-face" in res.output and "loose-box" in res.output and "no-face" in res.output
    assert "3 suspects in 5 images" in res.output
    from PIL import Image

    with Image.open(grid) as im:
        assert im.size[0] > 0


def test_audit_skips_a_corrupt_image_by_name(tmp_path):
    from tests.conftest import write_image

    images = tmp_path / "ds" / "images"
    img = write_image(images / "a.jpg", 64, 48, seed=1)
    write_labelme_json(img, [], width=64, height=48)
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    write_labelme_json(images / "broken.jpg", [], width=64, height=48)
    res = CliRunner().invoke(cli, ["audit", str(tmp_path / "ds"), "--detector", "haar"])
    assert res.exit_code == 0, res.output
    assert "broken.jpg" in res.output and "0 suspects in 1 image" in res.output


def test_audit_of_an_empty_dataset_is_a_clear_message(tmp_path):
    (tmp_path / "empty" / "images").mkdir(parents=True)
    res = CliRunner().invoke(cli, ["audit", str(tmp_path / "empty")])
    assert res.exit_code != 0 and "no images found" in res.output and "Traceback" not in res.output


def test_link_suspects_makes_a_folder_of_just_the_suspect_images_and_their_jsons(audited, tmp_path):
    from pathlib import Path

    from datatool.core.suspects import SUSPECTS_FOLDER, link_suspects
    from datatool.dataset import load_dataset

    _, doc, grid = audited
    audit_json = grid.parent / "audit.json"
    images = Path(doc["dataset"]) / "images"
    folder, linked, missing = link_suspects(audit_json, images)
    assert folder == images.resolve() / SUSPECTS_FOLDER and linked == 3 and missing == []
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["deleted.jpg", "deleted.json", "invented.jpg", "invented.json", "shifted.jpg", "shifted.json"]
    assert all(p.is_symlink() and p.resolve().parent == images.resolve() for p in folder.iterdir())
    assert len(load_dataset(images.parent).samples) == 5  # the hidden folder is not data
    # a correction saved through the link lands in the dataset's own JSON
    (folder / "deleted.json").write_text((folder / "deleted.json").read_text().replace('"shapes": []', '"shapes": [ ]'))
    assert '"shapes": [ ]' in (images / "deleted.json").read_text()


def test_reading_a_file_that_is_not_an_audit_names_it(tmp_path):
    from datatool.core.errors import DatatoolError
    from datatool.core.suspects import read_suspects

    bad = tmp_path / "other.json"
    bad.write_text('{"issues": []}')
    with pytest.raises(DatatoolError, match=r"other.json: kind: expected 'facekit-audit'"):
        read_suspects(bad)
