"""`datatool crop`: square face crops per person from a labelme dataset."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import write_image, write_labelme_json
from datatool.core.provenance import capture_info
from datatool.cli import cli
from datatool.core.faces import face_square, person_name_problem
from datatool.crop import crop_dataset, plan_crops
from datatool.core.errors import DatatoolError
from datatool.core.images import load_rgb, sha256_file
from datatool.core.sample import Box, Sample

ASTRONAUT_FACE = (180, 78, 268, 180)  # Eileen Collins' face in skimage.data.astronaut(), 512x512


def run(*args):
    return CliRunner().invoke(cli, ["crop", *map(str, args)])


def shapes(boxes_labels):
    """labelme shapes from ((x0, y0, x1, y1), label) pairs."""
    return [{"label": lab, "points": [[b[0], b[1]], [b[2], b[3]]], "group_id": None, "description": "",
             "shape_type": "rectangle", "flags": {}, "mask": None} for b, lab in boxes_labels]


def labelled(image_path, boxes_labels, *, width, height, extra=None):
    """A labelme JSON beside `image_path` whose boxes carry their own labels."""
    jp = write_labelme_json(image_path, [], width=width, height=height, extra=extra)
    data = json.loads(jp.read_text())
    data["shapes"] = shapes(boxes_labels)
    jp.write_text(json.dumps(data))
    return jp


@pytest.fixture
def astronaut_ds(tmp_path):
    from PIL import Image
    from skimage import data

    img = tmp_path / "ds" / "images" / "astro.jpg"
    img.parent.mkdir(parents=True)
    Image.fromarray(data.astronaut()).save(img, quality=95)
    labelled(img, [(ASTRONAUT_FACE, "face")], width=512, height=512)
    return tmp_path / "ds"


@pytest.fixture
def two_people(tmp_path):
    """Two 96x64 photos, each with alice and bob side by side, one negative and one unlabeled image."""
    root = tmp_path / "two"
    for k in range(2):
        img = write_image(root / "images" / f"p{k}.jpg", 96, 64, seed=k, box=(4, 10, 40, 50))
        labelled(img, [((4, 10, 40, 50), "alice"), ((50, 10, 90, 50), "bob")], width=96, height=64)
    neg = write_image(root / "images" / "neg.jpg", 96, 64, seed=5)
    write_labelme_json(neg, [], width=96, height=64)
    write_image(root / "images" / "unlabeled.jpg", 96, 64, seed=6)
    return root


# --------------------------------------------------------------------------- the square

@pytest.mark.parametrize("box,size,margin,expected", [
    ((40, 40, 60, 60), (100, 100), 0.5, (30, 30, 70, 70)),   # centred, 20 px face + 10 px each side
    ((40, 30, 60, 70), (100, 100), 0.0, (30, 30, 70, 70)),   # tall box -> square on its longer side
    ((0, 0, 20, 20), (100, 100), 0.5, (0, 0, 40, 40)),       # top-left corner: shifted in, not padded
    ((85, 70, 100, 100), (100, 100), 0.5, (40, 40, 100, 100)),  # bottom-right: 30 px side -> 60, shifted in
    ((10, 5, 90, 45), (100, 50), 0.2, (25, 0, 75, 50)),      # square larger than the image: shrunk to 50
    ((0, 0, 64, 48), (64, 48), 0.2, (8, 0, 56, 48)),         # whole-image box: image's shorter side
])
def test_face_square_is_square_inside_the_image(box, size, margin, expected):
    sq = face_square(Box(*box), width=size[0], height=size[1], margin=margin)
    assert sq.xyxy == expected
    assert sq.width == sq.height and sq.is_inside(*size)


@pytest.mark.parametrize("name,ok", [
    ("alice", True),          # plain name
    ("Anna Maria", True),     # spaces inside are fine
    ("", False),              # empty
    ("a/b", False),           # path separator
    (".hidden", False),       # hidden folder
    (" bob", False),          # stray space
])
def test_person_name_problem(name, ok):
    assert (person_name_problem(name) is None) == ok


# --------------------------------------------------------------------------- who is who

def _sample(key, boxes, labeled=True):
    return Sample(image_path=Path(key), width=100, height=100, image_id=key, labeled=labeled,
                  boxes=tuple(Box(*b, label=lab) for b, lab in boxes))


BIG, BIG2, SMALL = (0, 0, 40, 40), (50, 50, 90, 90), (0, 0, 10, 10)


@pytest.mark.parametrize("boxes,kw,people,skipped", [
    # label as person: each named box goes to its own folder
    ([(BIG, "alice"), (BIG2, "bob")], {"label_as_person": True}, ["alice", "bob"], {}),
    # label as person: 'face' is not a name
    ([(BIG, "face"), (BIG2, "bob")], {"label_as_person": True}, ["bob"], {"generic-label": 1}),
    # ... unless the user allows it
    ([(BIG, "face")], {"label_as_person": True, "allow_labels": ("face",)}, ["face"], {}),
    # a label that cannot be a folder
    ([(BIG, "a/b")], {"label_as_person": True}, [], {"bad-name": 1}),
    # --person: the one generic face is the person
    ([(BIG, "face")], {"person": "me"}, ["me"], {}),
    # --person: two unnamed faces - which one? skipped
    ([(BIG, "face"), (BIG2, "face")], {"person": "me"}, [], {"several-faces": 2}),
    # --person: a box named after the person wins over generic ones
    ([(BIG, "face"), (BIG2, "me")], {"person": "me"}, ["me"], {"generic-label": 1}),
    # --person: someone else's box is left out
    ([(BIG, "bob")], {"person": "me"}, [], {"other-person": 1}),
    # tiny faces are skipped
    ([(SMALL, "alice")], {"label_as_person": True, "min_face": 20}, [], {"tiny": 1}),
    # ... unless --min-face allows them
    ([(SMALL, "alice")], {"label_as_person": True, "min_face": 5}, ["alice"], {}),
])
def test_plan_routes_boxes_to_people(boxes, kw, people, skipped):
    counts: Counter = Counter()
    jobs = plan_crops([_sample("a.jpg", boxes)], skipped=counts, **kw)
    assert [j.person for j in jobs] == people
    assert {k: v for k, v in counts.items() if v} == skipped


def test_plan_names_flatten_subfolders_and_keep_stems_apart():
    samples = [_sample("sub/x.jpg", [(BIG, "al")]), _sample("sub/x.png", [(BIG, "al")]),
               _sample("neg.jpg", []), _sample("u.jpg", [], labeled=False)]
    counts: Counter = Counter()
    jobs = plan_crops(samples, label_as_person=True, skipped=counts)
    assert [j.name for j in jobs] == ["sub__x_0.jpg", "sub__x-png_0.jpg"]
    assert counts["negative"] == 1 and counts["unlabeled"] == 1


# --------------------------------------------------------------------------- real crops

def test_astronaut_crop_has_requested_size_and_a_face(astronaut_ds, tmp_path):
    from datatool.core.detect import get_detector

    out = tmp_path / "out"
    result = run(astronaut_ds, "--out", out, "--person", "eileen", "--size", "128")
    assert result.exit_code == 0, result.output
    crop = load_rgb(out / "people" / "eileen" / "astro_0.jpg")
    assert crop.shape == (128, 128, 3)
    faces = get_detector("haar").detect(crop)
    assert faces, "Haar finds no face in the crop"
    f = faces[0].box  # the face fills the middle of the crop (margin 0.2 around it)
    assert 0.3 * 128 < (f.x_min + f.x_max) / 2 < 0.7 * 128 and 0.3 * 128 < (f.y_min + f.y_max) / 2 < 0.7 * 128
    assert f.width > 0.4 * 128
    assert "eileen" in result.output and (out / "dataset.json").is_file()


def test_crop_follows_exif_orientation(tmp_path):
    from PIL import Image

    # displayed 60x40 with a bright patch at x 40..56, y 4..20; stored rotated (EXIF 6: rotate 90 CW to show)
    shown = np.full((40, 60, 3), 20, np.uint8)
    shown[4:20, 40:56] = 250
    stored = np.rot90(shown, k=1)  # what a camera held sideways stores; EXIF 6 turns it back
    img = tmp_path / "ds" / "images" / "phone.jpg"
    img.parent.mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(stored)).save(img, quality=95, exif=exif)
    assert load_rgb(img).shape == (40, 60, 3)
    labelled(img, [((40, 4, 56, 20), "al")], width=60, height=40)
    res = crop_dataset(tmp_path / "ds", out=tmp_path / "out", label_as_person=True, margin=0.0, size=32,
                       min_face=0, progress=False)
    crop = load_rgb(res.written[0])
    assert crop.mean() > 200  # the patch, not the dark background the stored grid has there


def test_crops_carry_group_and_session_of_their_photo(two_people, tmp_path):
    img = two_people / "images" / "p0.jpg"
    labelled(img, [((4, 10, 40, 50), "alice")], width=96, height=64,
             extra={"facekit": {"group": "g-original", "session": "s1"}})
    res = crop_dataset(two_people, out=tmp_path / "out", label_as_person=True, progress=False)
    info = {p.relative_to(tmp_path / "out").as_posix(): capture_info(p) for p in res.written}
    assert info["people/alice/p0_0.jpg"]["group"] == "g-original"  # augment's group passes through
    assert info["people/alice/p0_0.jpg"]["session"] == "s1"
    sha = sha256_file(two_people / "images" / "p1.jpg")  # no group in the JSON: the photo's sha256
    assert info["people/alice/p1_0.jpg"]["group"] == sha == info["people/bob/p1_1.jpg"]["group"]
    rows = list(csv.DictReader(open(tmp_path / "out" / "crops.csv")))
    assert {r["output"] for r in rows} == set(info) and all(r["group"] for r in rows)


def test_label_as_person_routing_and_summary(two_people, tmp_path):
    out = tmp_path / "out"
    result = run(two_people, "--out", out, "--label-as-person")
    assert result.exit_code == 0, result.output
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg")) == [
        "people/alice/p0_0.jpg", "people/alice/p1_0.jpg", "people/bob/p0_1.jpg", "people/bob/p1_1.jpg"]
    assert "skipped 1 negative" in result.output and "skipped 1 unlabeled" in result.output
    crop = load_rgb(out / "people" / "alice" / "p0_0.jpg")  # alice's box is the bright patch
    assert crop.shape == (160, 160, 3) and crop[40:120, 40:120].mean() > 150
    record = json.loads((out / "dataset.json").read_text())
    assert record["counts"]["people"] == {"alice": 2, "bob": 2} and record["stage"] == "crop"


# --------------------------------------------------------------------------- nothing lost, clear errors

def test_refuses_to_overwrite_then_overwrites_when_asked(two_people, tmp_path):
    out = tmp_path / "out"
    assert run(two_people, "--out", out, "--label-as-person").exit_code == 0
    target = out / "people" / "alice" / "p0_0.jpg"
    target.write_bytes(b"my edit")
    result = run(two_people, "--out", out, "--label-as-person")
    assert result.exit_code == 1 and "--overwrite" in result.output and "Traceback" not in result.output
    assert target.read_bytes() == b"my edit"
    result = run(two_people, "--out", out, "--label-as-person", "--overwrite")
    assert result.exit_code == 0 and target.read_bytes()[:2] == b"\xff\xd8"
    assert not [p for p in out.rglob("*") if p.name.startswith(".facekit-tmp")]


@pytest.mark.parametrize("args,message", [
    (["missing", "--out", "OUT", "--person", "me"], "not found"),                 # no such dataset
    (["DS", "--out", "OUT"], "--person NAME"),                                    # whose faces?
    (["DS", "--out", "OUT", "--person", "me", "--label-as-person"], "not both"),  # both
    (["DS", "--out", "OUT", "--person", "a/b"], "--person"),                      # unusable name
    (["DS", "--out", "DS/images/crops", "--person", "me"], "outside the dataset"),  # out inside the source
    (["DS", "--out", "DS", "--person", "me", "--overwrite"], "outside the dataset"),  # out is the source
])
def test_bad_arguments_give_one_clear_line(tiny_dataset, tmp_path, args, message):
    args = [a.replace("DS", str(tiny_dataset)).replace("OUT", str(tmp_path / "out")) if a != "missing"
            else str(tmp_path / "missing") for a in args]
    result = run(*args)
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists() and not (tiny_dataset / "people").exists()


def test_generic_labels_with_label_as_person_explain_what_to_do(tiny_dataset, tmp_path):
    result = run(tiny_dataset, "--out", tmp_path / "out", "--label-as-person")  # tiny_dataset says 'face'
    assert result.exit_code == 1
    assert "--allow-label" in result.output and "--person NAME" in result.output
    assert not (tmp_path / "out").exists()


def test_corrupt_image_is_reported_and_the_rest_is_cropped(two_people, tmp_path):
    (two_people / "images" / "p1.jpg").write_bytes(b"\xff\xd8not really a jpeg")
    out = tmp_path / "out"
    result = run(two_people, "--out", out, "--label-as-person")
    assert result.exit_code == 0, result.output
    assert "p1.jpg" in result.output and "skipped 1 images that could not be read" in result.output
    assert sorted(p.name for p in out.rglob("*.jpg")) == ["p0_0.jpg", "p0_1.jpg"]


def test_json_size_disagreeing_with_image_is_skipped(two_people, tmp_path):
    labelled(two_people / "images" / "p1.jpg", [((4, 10, 40, 50), "alice")], width=200, height=64)
    res = crop_dataset(two_people, out=tmp_path / "out", label_as_person=True, progress=False)
    assert [i.code for i in res.issues if i.severity == "error"] == ["size-mismatch"]
    assert res.per_person == {"alice": 1, "bob": 1}


def test_ctrl_c_keeps_whole_crops_only(two_people, tmp_path, monkeypatch):
    import datatool.core.images

    real, calls = datatool.core.images.encode_jpeg, []

    def interrupt_third(rgb, quality=95):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(rgb, quality)

    monkeypatch.setattr(datatool.core.images, "encode_jpeg", interrupt_third)
    out = tmp_path / "out"
    res = crop_dataset(two_people, out=out, label_as_person=True, progress=False)
    assert res.interrupted and res.total == 2
    files = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert files == ["crops.csv", "dataset.json", "p0_0.jpg", "p0_1.jpg"]
    assert all(load_rgb(p).shape == (160, 160, 3) for p in res.written)
    assert json.loads((out / "dataset.json").read_text())["interrupted"] is True


def test_grid_shows_one_row_per_person(two_people, tmp_path):
    grid = tmp_path / "grid.png"
    result = run(two_people, "--out", tmp_path / "out", "--label-as-person", "--grid", grid)
    assert result.exit_code == 0, result.output
    sheet = load_rgb(grid)
    assert sheet.shape[1] == 2 * 96 and sheet.shape[0] >= 2 * 96  # 2 columns of 96 px cells, 2 rows


def test_library_error_names_the_dataset(tmp_path):
    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(DatatoolError, match="no images found"):
        crop_dataset(tmp_path / "empty", out=tmp_path / "out", person="me", progress=False)
