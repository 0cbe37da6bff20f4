"""`datatool validate`: one tiny generated bad file per check, the CLI's exit codes and messages,
the JSON report, and the safe `--fix` (with its backups)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import write_image, write_labelme_json
from datatool.cli import cli
from datatool.core.images import sha256_file
from datatool.validate import validate

W, H = 64, 48


def clean_dataset(root: Path) -> Path:
    """Two labeled faces and one negative, all distinct: validates with no error and no warning."""
    images = root / "images"
    for k in range(2):
        box = (8 + 4 * k, 6, 34 + 4 * k, 32)
        img = write_image(images / f"face_{k}.jpg", W, H, seed=k, box=box)
        write_labelme_json(img, [box], width=W, height=H)
    write_labelme_json(write_image(images / "neg.jpg", W, H, seed=9), [], width=W, height=H)
    return root


def write_exif_rotated(path: Path, stored_w: int = W, stored_h: int = H, orientation: int = 6) -> Path:
    """A JPEG stored `stored_w` x `stored_h` whose EXIF says to rotate it for display (6: 90 deg CW)."""
    from PIL import Image

    arr = np.random.default_rng(3).integers(0, 90, (stored_h, stored_w, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format="JPEG", quality=95, exif=exif)
    return path


def _shape(kind, points, label="face"):
    return {"label": label, "points": points, "group_id": None, "description": "", "shape_type": kind,
            "flags": {}, "mask": None}


def _json(img: Path, shapes, *, width=W, height=H, image_path=None) -> Path:
    data = {"version": "6.3.1", "flags": {}, "shapes": shapes, "imagePath": image_path or img.name,
            "imageData": None, "imageHeight": height, "imageWidth": width}
    jp = img.with_suffix(".json")
    jp.write_text(json.dumps(data))
    return jp


def _truncated(d: Path) -> str:
    img = write_image(d / "bad.jpg", W, H, seed=20)
    write_labelme_json(img, [(5, 5, 30, 30)], width=W, height=H)
    data = img.read_bytes()
    img.write_bytes(data[: len(data) // 2])
    return "bad.jpg"


def _not_an_image(d: Path) -> str:
    (d / "bad.jpg").write_bytes(b"this is not a picture")
    return "bad.jpg"


def _not_json(d: Path) -> str:
    write_image(d / "bad.jpg", W, H, seed=20)
    (d / "bad.json").write_text("{ this is not json")
    return "bad.json"


def _not_labelme(d: Path) -> str:
    write_image(d / "bad.jpg", W, H, seed=20)
    (d / "bad.json").write_text(json.dumps({"annotations": []}))
    return "bad.json"


def _image_gone(d: Path) -> str:
    img = write_image(d / "gone.jpg", W, H, seed=20)
    write_labelme_json(img, [(5, 5, 30, 30)], width=W, height=H)
    img.unlink()
    return "gone.json"


def _size_mismatch(d: Path) -> str:
    _json(write_image(d / "bad.jpg", W, H, seed=20), [_shape("rectangle", [[5, 5], [30, 30]])], width=100)
    return "bad.json"


def _exif_stored_size(d: Path) -> str:
    _json(write_exif_rotated(d / "bad.jpg"), [_shape("rectangle", [[5, 5], [30, 30]])], width=W, height=H)
    return "bad.json"


def _out_of_bounds(d: Path) -> str:
    _json(write_image(d / "bad.jpg", W, H, seed=20), [_shape("rectangle", [[40, 5], [80, 30]])])
    return "bad.json"


def _out_of_real_bounds(d: Path) -> str:
    # inside the 100 px the JSON claims, outside the 64 px image
    _json(write_image(d / "bad.jpg", W, H, seed=20), [_shape("rectangle", [[40, 5], [90, 30]])], width=100)
    return "bad.json"


def _inverted(d: Path) -> str:
    _json(write_image(d / "bad.jpg", W, H, seed=20), [_shape("rectangle", [[30, 30], [5, 5]])])
    return "bad.json"


def _zero_area(d: Path) -> str:
    _json(write_image(d / "bad.jpg", W, H, seed=20), [_shape("rectangle", [[10, 5], [10, 30]])])
    return "bad.json"


def _other_label(d: Path) -> str:
    _json(write_image(d / "bad.jpg", W, H, seed=20), [_shape("rectangle", [[5, 5], [30, 30]], label="cat")])
    return "bad.json"


def _duplicate(d: Path) -> str:
    shutil.copy(d / "face_0.jpg", d / "copy.jpg")
    return "copy.jpg"


def _unlabeled(d: Path) -> str:
    write_image(d / "bad.jpg", W, H, seed=20)
    return "bad.jpg"


def _negative(d: Path) -> str:
    _json(write_image(d / "bad.jpg", W, H, seed=20), [])
    return "bad.json"


def _tiny(d: Path) -> str:
    _json(write_image(d / "bad.jpg", W, H, seed=20), [_shape("rectangle", [[5, 5], [11, 30]])])
    return "bad.json"


def _orphan(d: Path) -> str:
    # an annotation named after nothing, whose imagePath leads to an image paired with its own JSON
    (d / "stray.json").write_text((d / "face_0.json").read_text().replace('"face_0.jpg"', '"face_1.jpg"'))
    return "stray.json"


def _wrong_image_path(d: Path) -> str:
    _json(write_image(d / "bad.jpg", W, H, seed=20), [_shape("rectangle", [[5, 5], [30, 30]])],
          image_path="C:\\Users\\me\\Pictures\\IMG_0001.jpg")
    return "bad.json"


def _polygon(d: Path) -> str:
    _json(write_image(d / "bad.jpg", W, H, seed=20), [_shape("polygon", [[5, 5], [30, 8], [20, 30]])])
    return "bad.json"


def _circle(d: Path) -> str:
    _json(write_image(d / "bad.jpg", W, H, seed=20), [_shape("circle", [[20, 20], [30, 20]])])
    return "bad.json"


def _nan_point(d: Path) -> str:
    write_image(d / "bad.jpg", W, H, seed=20)
    # Python's json reads NaN; it must be reported, not crash Box
    (d / "bad.json").write_text('{"shapes": [{"label": "face", "points": [[NaN, 1], [20, 30]], '
                                '"shape_type": "rectangle"}], "imagePath": "bad.jpg", "imageWidth": 64, '
                                '"imageHeight": 48}')
    return "bad.json"


def _shapes_not_a_list(d: Path) -> str:
    write_image(d / "bad.jpg", W, H, seed=20)
    (d / "bad.json").write_text(json.dumps({"shapes": 3, "imagePath": "bad.jpg", "imageWidth": W, "imageHeight": H}))
    return "bad.json"


CASES = [
    (_shapes_not_a_list, "error", "bad-json", "shapes", "expected a list"),  # labelme-shaped, but not quite
    (_truncated, "error", "bad-image", "", "truncated"),  # JPEG cut in half: only a full decode sees it
    (_not_an_image, "error", "bad-image", "", "not an image"),  # text bytes named .jpg
    (_not_json, "error", "bad-json", "", "not valid JSON"),  # JSON syntax error
    (_not_labelme, "error", "bad-json", "", "not a labelme file"),  # valid JSON, no `shapes`
    (_image_gone, "error", "image-missing", "imagePath", "gone.jpg"),  # JSON whose image was deleted
    (_size_mismatch, "error", "size-mismatch", "imageWidth/imageHeight", "100x48"),  # stored size wrong
    (_exif_stored_size, "error", "exif-rotated-size", "imageWidth/imageHeight", "orientation 6"),  # unrotated size
    (_out_of_bounds, "warning", "box-out-of-bounds", "shapes[0].points", "outside"),  # box past the right edge
    (_out_of_real_bounds, "warning", "box-out-of-bounds", "shapes[0].points", "64x48"),  # judged on the real image
    (_inverted, "info", "corner-order", "shapes[0].points", "corners"),  # dragged bottom-right to top-left
    (_zero_area, "error", "zero-area-box", "shapes[0].points", "zero-area"),  # both corners on one vertical line
    (_other_label, "error", "label-not-allowed", "shapes[0].label", "'cat'"),  # outside --labels face
    (_duplicate, "warning", "duplicate-image", "", "face_0.jpg"),  # same bytes under two names
    (_unlabeled, "info", "unlabeled", "", "unlabeled"),  # image with no JSON
    (_negative, "info", "negative", "shapes", "negative"),  # JSON with no shapes
    (_tiny, "warning", "tiny-face", "shapes[0].points", "6x25"),  # narrower than --min-face 10
    (_orphan, "warning", "orphan-json", "imagePath", "face_1.jpg"),  # JSON with no same-stem image
    (_wrong_image_path, "warning", "image-path-mismatch", "imagePath", "IMG_0001"),  # Windows path from elsewhere
    (_polygon, "warning", "polygon", "shapes[0].shape_type", "bounding box"),  # polygon becomes its bbox
    (_circle, "error", "unsupported-shape", "shapes[0].shape_type", "circle"),  # faces must be rectangles
    (_nan_point, "error", "bad-points", "shapes[0].points", "number pairs"),  # NaN coordinate
]


@pytest.mark.parametrize("make,severity,code,field,text", CASES, ids=[c[0].__name__.strip("_") for c in CASES])
def test_each_check_finds_its_bad_file(tmp_path, make, severity, code, field, text):
    root = clean_dataset(tmp_path / "ds")
    name = make(root / "images")
    report = validate(root, labels=["face"], min_face=10)
    hits = [i for i in report.issues if i.code == code and Path(i.file).name == name]
    assert hits, f"no {code} issue for {name}: {[str(i) for i in report.issues]}"
    assert hits[0].severity == severity and hits[0].field == field
    assert text in hits[0].message
    assert [str(i) for i in report.issues if i.severity != "info" and Path(i.file).name != name] == []


def test_clean_dataset_has_no_errors_or_warnings(tmp_path):
    report = validate(clean_dataset(tmp_path / "ds"), labels=["face"])
    assert [str(i) for i in report.issues if i.severity != "info"] == []
    assert (report.counts["images"], report.counts["labeled"], report.counts["negatives"],
            report.counts["unlabeled"], report.counts["faces"]) == (3, 3, 1, 0, 2)


def test_exif_rotated_photo_with_displayed_size_is_fine(tmp_path):
    # labelme shows the photo rotated (48x64) and writes that size: nothing to report
    root = clean_dataset(tmp_path / "ds")
    _json(write_exif_rotated(root / "images" / "phone.jpg"), [_shape("rectangle", [[5, 5], [40, 60]])],
          width=H, height=W)
    report = validate(root)
    assert [i for i in report.issues if "phone" in i.file and i.severity != "info"] == []


def test_a_json_whose_every_shape_is_rejected_is_not_a_negative(tmp_path):
    root = clean_dataset(tmp_path / "ds")
    _circle(root / "images")
    report = validate(root)
    assert (report.counts["labeled"], report.counts["negatives"]) == (4, 1)
    assert "negative" not in {i.code for i in report.issues if i.file.endswith("bad.json")}


def test_two_images_sharing_one_json_are_reported_once(tmp_path):
    root = clean_dataset(tmp_path / "ds")
    write_image(root / "images" / "face_0.png", W, H, seed=50)  # face_0.json now pairs with two images
    report = validate(root)
    amb = [i for i in report.issues if i.code == "ambiguous-json"]
    assert len(amb) == 1 and "checked against face_0.jpg" in amb[0].message
    assert report.counts["labeled"] == 3 and report.counts["faces"] == 2


def test_missing_negatives_is_a_warning(tmp_path):
    root = clean_dataset(tmp_path / "ds")
    (root / "images" / "neg.json").unlink()
    report = validate(root)
    assert [i.code for i in report.issues if i.severity == "warning"] == ["no-negatives"]
    assert report.counts["unlabeled"] == 1 and not report.has_errors


def test_labels_none_allows_any_label_and_min_face_zero_disables(tmp_path):
    root = clean_dataset(tmp_path / "ds")
    _other_label(root / "images")
    _tiny(root / "images")
    codes = {i.code for i in validate(root, labels=None, min_face=0).issues}
    assert "label-not-allowed" not in codes and "tiny-face" not in codes


# ----------------------------------------------------------------------------- people layout


def _people(root: Path, counts: dict[str, int]) -> Path:
    for p, (name, n) in enumerate(counts.items()):
        (root / "people" / name).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            write_image(root / "people" / name / f"{k}.jpg", 24, 24, seed=100 * p + k)
    return root


def test_people_counts_and_imbalance(tmp_path):
    root = _people(clean_dataset(tmp_path / "ds"), {"alice": 7, "bob": 2, "nobody": 0})
    report = validate(root)
    assert report.people == {"alice": 7, "bob": 2, "nobody": 0}
    by_code = {i.code: i for i in report.issues}
    assert "ratio 3.5" in by_code["imbalance"].message and "bob" in by_code["imbalance"].message
    assert by_code["empty-person"].file.endswith("nobody")
    assert "3 people (9 crops)" in report.summary()


def test_people_bad_crop_one_person_and_duplicates_across_people(tmp_path):
    root = _people(clean_dataset(tmp_path / "ds"), {"alice": 2, "bob": 2})
    shutil.copy(root / "people" / "alice" / "0.jpg", root / "people" / "bob" / "same.jpg")
    (root / "people" / "bob" / "1.jpg").write_bytes(b"\xff\xd8\xff garbage")
    report = validate(root)
    across = [i for i in report.issues if i.code == "duplicate-across-people"]
    assert len(across) == 1 and across[0].severity == "error" and "alice, bob" in across[0].message
    assert [Path(i.file).name for i in report.issues if i.code == "bad-image"] == ["1.jpg"]
    assert report.people == {"alice": 2, "bob": 2}  # the corrupt crop is not counted

    solo = _people(tmp_path / "solo", {"alice": 3})
    assert "one-person" in {i.code for i in validate(solo).issues}


# ----------------------------------------------------------------------------- CLI


def _invoke(*args):
    return CliRunner().invoke(cli, ["validate", *map(str, args)])


def test_cli_exit_0_and_summary_on_a_clean_dataset(tmp_path):
    result = _invoke(clean_dataset(tmp_path / "ds"), "--labels", "face")
    assert result.exit_code == 0, result.output
    assert "3 images, 3 labeled, 1 negatives, 0 unlabeled, 2 faces" in result.output
    assert "0 errors, 0 warnings" in result.output


@pytest.mark.parametrize("make,needle", [
    (_truncated, "bad.jpg"),  # corrupt image: a table row, not a traceback
    (_not_json, "not valid JSON"),  # non-JSON annotation
    (_other_label, "'cat' is not one of the allowed labels"),  # label outside --labels
])
def test_cli_exit_1_names_the_file_without_traceback(tmp_path, make, needle):
    root = clean_dataset(tmp_path / "ds")
    make(root / "images")
    result = _invoke(root, "--labels", "face")
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert needle in result.output and "Traceback" not in result.output
    assert "1 error" in result.output


@pytest.mark.parametrize("args,needle", [
    (["{ds}_missing"], "dataset folder not found"),  # no such dataset
    (["{ds}", "--images", "x"], "--images is for other formats"),  # option that makes no sense here
    (["{ds}", "--labels", ","], "at least one label"),  # empty allowed set
])
def test_cli_bad_arguments_give_one_clear_line(tmp_path, args, needle):
    root = clean_dataset(tmp_path / "ds")
    result = CliRunner().invoke(cli, ["validate", *[a.format(ds=root) for a in args]])
    assert result.exit_code != 0 and needle in result.output
    assert not result.exception or isinstance(result.exception, SystemExit)


def test_cli_json_report_has_every_issue_and_the_counts(tmp_path):
    root = clean_dataset(tmp_path / "ds")
    _size_mismatch(root / "images")
    write_image(root / "images" / "loose.jpg", W, H, seed=30)
    out = tmp_path / "report.json"
    result = _invoke(root, "--json", out, "--max-rows", "1")
    assert result.exit_code == 1
    assert "more rows not shown" in result.output
    report = json.loads(out.read_text())
    assert report["summary"]["errors"] == 1 and report["summary"]["unlabeled"] == 1
    assert report["summary"]["images"] == 5 and report["summary"]["faces"] == 3
    codes = {(Path(i["file"]).name, i["code"]) for i in report["issues"]}
    assert {("bad.json", "size-mismatch"), ("loose.jpg", "unlabeled")} <= codes
    assert all(set(i) == {"severity", "file", "field", "message", "code", "fixable"} for i in report["issues"])

    again = _invoke(root, "--json", out)  # an existing report is not replaced silently
    assert again.exit_code == 1 and "already exists" in again.output
    assert _invoke(root, "--json", out, "--overwrite").exit_code == 1  # errors remain: exit 1, file replaced


def test_cli_grid_draws_the_problem_images(tmp_path):
    root = clean_dataset(tmp_path / "ds")
    _out_of_bounds(root / "images")
    sheet = tmp_path / "problems.png"
    result = _invoke(root, "--grid", sheet)
    assert result.exit_code == 0, result.output
    from PIL import Image

    with Image.open(sheet) as im:
        assert im.size[0] >= 256 and im.size[1] >= 256
    assert "1 images with problems drawn" in result.output


# ----------------------------------------------------------------------------- --fix


def test_fix_repairs_safe_problems_keeps_backups_and_never_touches_images(tmp_path):
    root = clean_dataset(tmp_path / "ds")
    d = root / "images"
    img = write_image(d / "bad.jpg", W, H, seed=20)
    jp = _json(img, [_shape("rectangle", [[30, 30], [5, 5]]),  # inverted
                     _shape("rectangle", [[40, 5], [80, 30]]),  # partly outside
                     _shape("rectangle", [[70, 5], [90, 30]]),  # wholly outside: cannot be clipped, kept
                     _shape("polygon", [[-5, 5], [30, 8], [20, 30]])],  # polygon past the left edge
               width=100, image_path="elsewhere/bad.jpg")
    original, image_hash = jp.read_bytes(), sha256_file(img)
    (d / "bad.json.bak").write_text("an older backup the user keeps")

    result = _invoke(root, "--fix")
    fixed = json.loads(jp.read_text())
    assert [s["points"] for s in fixed["shapes"]] == [
        [[5, 5], [30, 30]], [[40, 5], [64, 30]], [[70, 5], [90, 30]], [[0, 5], [30, 8], [20, 30]]]
    assert (fixed["imageWidth"], fixed["imageHeight"], fixed["imagePath"]) == (W, H, "bad.jpg")
    assert (d / "bad.json.bak").read_text() == "an older backup the user keeps"  # never overwritten
    assert (d / "bad.json.bak1").read_bytes() == original
    assert sha256_file(img) == image_hash
    assert "Fixed 1 file;" in result.output and "bad.json.bak1" in result.output
    # what cannot be fixed safely is still reported, so the run still fails
    assert result.exit_code == 1 and "zero-area" in result.output

    second = _invoke(root, "--fix")  # nothing left to fix: no new backup
    assert "Fixed" not in second.output and not (d / "bad.json.bak2").exists()


def test_fixed_file_opens_in_labelme(tmp_path):
    # real labelme refuses the wrong size and cannot find the image; after --fix it opens the file
    from labelme import LabelFile
    from labelme._label_file import LabelFileReadError

    root = clean_dataset(tmp_path / "ds")
    img = write_image(root / "images" / "bad.jpg", W, H, seed=20)
    jp = _json(img, [_shape("rectangle", [[30, 30], [5, 5]])], width=100, image_path="gone\\IMG_1.jpg")
    with pytest.raises(LabelFileReadError):
        LabelFile(str(jp))
    result = _invoke(root, "--fix")
    assert result.exit_code == 0, result.output
    lf = LabelFile(str(jp))
    assert lf.image_path == "bad.jpg" and lf.image_data == img.read_bytes()
    assert lf.shapes[0]["points"] == [[5, 5], [30, 30]]


def test_fix_leaves_an_exif_frame_mismatch_alone(tmp_path):
    root = clean_dataset(tmp_path / "ds")
    _exif_stored_size(root / "images")
    before = (root / "images" / "bad.json").read_bytes()
    report = validate(root, fix=True)
    assert (root / "images" / "bad.json").read_bytes() == before and report.fixed == []
    assert not (root / "images" / "bad.json.bak").exists()
    assert "exif-rotated-size" in {i.code for i in report.issues}


@pytest.mark.parametrize("fmt", ["wider", "coco", "voc", "yolo", "csv"])
def test_other_formats_are_checked_through_their_reader(tmp_path, fmt):
    # the clean set written in `fmt` with a 4 px wide face and a truncated image
    from datatool.dataset import FORMATS
    from datatool.core.sample import Box

    samples = FORMATS["labelme"].read(clean_dataset(tmp_path / "ds"))
    samples = [s.replace(boxes=(Box(5, 5, 9, 30),)) if s.image_id == "face_0.jpg" else s for s in samples]
    out = tmp_path / fmt
    FORMATS[fmt].write(samples, out)
    victim = next(out.rglob("face_1.jpg"))
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])  # header intact, pixels cut

    report = validate(out, format=fmt)
    assert [Path(i.file).name for i in report.issues if i.severity == "error"] == ["face_1.jpg"]
    assert [i.code for i in report.issues if i.severity == "warning"] == ["tiny-face"]
    assert report.counts["negatives"] == 1 and report.counts["faces"] == 2
    result = _invoke(out, "--format", fmt)
    assert result.exit_code == 1 and "truncated" in result.output and "face_1.jpg" in result.output


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    result = _invoke(tmp_path / "empty")
    assert result.exit_code == 1 and "no images found" in result.output


def test_fix_skips_a_file_it_cannot_parse(tmp_path):
    root = clean_dataset(tmp_path / "ds")
    name = _shapes_not_a_list(root / "images")
    report = validate(root, fix=True)
    assert [(i.code, i.field) for i in report.issues if Path(i.file).name == name] == [("bad-json", "shapes")]
    assert report.fixed == [] and not (root / "images" / "bad.json.bak").exists()


def test_fix_is_refused_for_other_formats(tmp_path):
    result = _invoke(tmp_path, "--format", "wider", "--fix")
    assert result.exit_code == 1 and "--fix edits labelme JSONs only" in result.output


def test_cli_folds_many_issues_of_one_kind_into_one_row(tmp_path):
    root = clean_dataset(tmp_path / "ds")
    for k in range(8):
        write_image(root / "images" / f"loose_{k}.jpg", W, H, seed=40 + k)
    result = _invoke(root)
    assert result.exit_code == 0
    assert result.output.count("unlabeled: no labelme JSON") == 5
    assert "3 more 'unlabeled' like the above" in result.output
    assert "8 unlabeled" in result.output
