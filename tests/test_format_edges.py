"""Format edge cases over generated files (issue 14, items 8 and 9): WIDER byte-order marks,
repeated images, event folders and line breaks in names; YOLO class names that are not UTF-8 or
have mixed keys; labelled GIFs; 16-bit grey PNGs; `--workers 0`; a split with no face.

Each error is checked through the CLI as a user meets it: the exact message, exit code 1 (2 for
click's own usage errors) and no traceback."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import write_image, write_labelme_json
from datatool.cli import cli
from datatool.core.errors import AnnotationError, DatatoolError
from datatool.core.sample import Box, Sample
from datatool.formats import wider, yolo


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    # a library error must reach the user as a message, not as an exception click did not handle
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def _wider_tree(tmp_path: Path, text: str, *, encoding: str = "utf-8") -> Path:
    write_image(tmp_path / "images" / "e" / "a.jpg", 40, 30, seed=1)
    write_image(tmp_path / "images" / "e" / "b.jpg", 40, 30, seed=2)
    gt = tmp_path / "gt_bbx_gt.txt"
    gt.write_bytes(text.encode(encoding))
    return gt


# ------------------------------------------------------------------------------------ WIDER

def test_wider_file_with_a_byte_order_mark_reads_its_first_image(tmp_path):
    # Windows Notepad saves "UTF-8" with a BOM; it used to glue itself to the first file line
    gt = _wider_tree(tmp_path, "e/a.jpg\n1\n1 2 10 10 0 0 0 0 0 0\ne/b.jpg\n0\n0 0 0 0 0 0 0 0 0 0\n",
                     encoding="utf-8-sig")
    assert gt.read_bytes().startswith(b"\xef\xbb\xbf")
    samples = wider.read_wider(gt, tmp_path / "images")
    assert [s.image_id for s in samples] == ["e/a.jpg", "e/b.jpg"]
    result = run("convert", gt, "--from", "wider", "--images", tmp_path / "images", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "images" / "e" / "a.json").is_file()


def test_wider_image_listed_twice_with_the_same_faces_is_kept_once_with_a_warning(tmp_path):
    gt = _wider_tree(tmp_path, "e/a.jpg\n1\n1 2 10 10 0 0 0 0 0 0\ne/b.jpg\n0\n0 0 0 0 0 0 0 0 0 0\n"
                               "e/a.jpg\n1\n1 2 10 10 0 0 0 0 0 0\n")
    issues = []
    samples = wider.read_wider(gt, tmp_path / "images", issues=issues)
    assert [s.image_id for s in samples] == ["e/a.jpg", "e/b.jpg"]
    assert [(i.severity, i.field, i.message) for i in issues] == [
        ("warning", "line 7", "e/a.jpg is listed again with the same faces (first at line 1); kept once")]


def test_wider_image_listed_twice_with_different_faces_is_an_error_naming_both_lines(tmp_path):
    gt = _wider_tree(tmp_path, "e/a.jpg\n1\n1 2 10 10 0 0 0 0 0 0\ne/b.jpg\n0\n0 0 0 0 0 0 0 0 0 0\n"
                               "e//a.jpg\n2\n1 2 10 10 0 0 0 0 0 0\n20 5 8 8 0 0 0 0 0 0\n")
    issues = []
    samples = wider.read_wider(gt, tmp_path / "images", issues=issues)
    # which list is right cannot be told: the image is left out, not trained with faces missing
    assert [s.image_id for s in samples] == ["e/b.jpg"]
    message = "e/a.jpg is listed again with different faces (first at line 1); each image must be listed once"
    assert [(i.severity, i.field, i.message, i.code) for i in issues] == [
        ("error", "line 7", message, "duplicate-image")]
    result = run("convert", gt, "--from", "wider", "--images", tmp_path / "images", "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert f"line 7  {message}" in result.output
    assert "1 error(s) in the source; nothing written" in result.output
    assert not (tmp_path / "out").exists()


def test_wider_export_puts_every_image_in_an_event_folder_and_reads_back(tmp_path):
    ds = tmp_path / "ds" / "images"
    a = write_image(ds / "good.jpg", 64, 48, seed=1, box=(10, 8, 30, 32))
    write_labelme_json(a, [(10, 8, 30, 32)], width=64, height=48)
    b = write_image(ds / "3--Riot" / "b.jpg", 64, 48, seed=2)
    write_labelme_json(b, [], width=64, height=48)
    out = tmp_path / "w"
    result = run("convert", tmp_path / "ds", "--from", "labelme", "--to", "wider", "--out", out)
    assert result.exit_code == 0, result.output
    text = (out / "wider_face_bbx_gt.txt").read_text()
    # WIDER's own layout, `event/name.jpg`: Datumaro's reader finds file lines by their "/"
    assert text == "3--Riot/b.jpg\n0\n0 0 0 0 0 0 0 0 0 0\n0--facekit/good.jpg\n1\n10 8 20 24 0 0 0 0 0 0\n"
    assert (out / "images" / "0--facekit" / "good.jpg").read_bytes() == a.read_bytes()
    assert (out / "images" / "3--Riot" / "b.jpg").read_bytes() == b.read_bytes()
    back = wider.read(out)
    assert [(s.image_id, [x.xyxy for x in s.boxes]) for s in back] == [
        ("3--Riot/b.jpg", []), ("0--facekit/good.jpg", [(10, 8, 30, 32)])]


def test_wider_reads_file_lines_without_an_event_folder_too(tmp_path):
    write_image(tmp_path / "images" / "good.jpg", 40, 30)
    gt = tmp_path / "gt.txt"
    gt.write_text("good.jpg\n1\n1 2 10 10 0 0 0 0 0 0\n")  # what facekit wrote before event folders
    (s,) = wider.read_wider(gt, tmp_path / "images")
    assert s.image_id == "good.jpg" and s.boxes[0].xyxy == (1, 2, 11, 12)


def test_wider_export_refuses_two_images_that_would_share_a_file_line(tmp_path):
    a = write_image(tmp_path / "a.jpg", 40, 30)
    samples = [Sample(a, 40, 30, boxes=(Box(1, 1, 9, 9),), image_id="a.jpg"),
               Sample(a, 40, 30, boxes=(), image_id="0--facekit/a.jpg")]
    with pytest.raises(DatatoolError, match=r"its WIDER file line '0--facekit/a.jpg' is also that of"):
        wider.write(samples, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", [
    "two\nlines.jpg",  # a newline would split the file line in two
    "two\rlines.jpg",  # so would a carriage return
    "para\u2028graph.jpg",  # and any other break str.splitlines knows
])
def test_wider_export_refuses_a_name_with_a_line_break(tmp_path, name):
    ds = tmp_path / "ds" / "images"
    img = write_image(ds / name, 40, 30, box=(5, 5, 20, 20))
    write_labelme_json(img, [(5, 5, 20, 20)], width=40, height=30)
    out = tmp_path / "w"
    result = run("convert", tmp_path / "ds", "--from", "labelme", "--to", "wider", "--out", out)
    assert result.exit_code == 1
    assert (f"image_id: {name!r} contains a line break, which cannot be written to a WIDER gt file "
            "(one image name per line); rename the image") in result.output
    assert not (out / "wider_face_bbx_gt.txt").exists() and not (out / "images").exists()


def test_wider_round_trip_keeps_names_with_spaces_and_accents(tmp_path):
    ds = tmp_path / "ds" / "images"
    img = write_image(ds / "Fête 2024" / "my photo é.jpg", 40, 30, box=(5, 5, 20, 20))
    write_labelme_json(img, [(5, 5, 20, 20)], width=40, height=30)
    assert run("convert", tmp_path / "ds", "--from", "labelme", "--to", "wider", "--out", tmp_path / "w").exit_code == 0
    result = run("convert", tmp_path / "w", "--from", "wider", "--out", tmp_path / "back")
    assert result.exit_code == 0, result.output
    back = json.loads((tmp_path / "back" / "images" / "Fête 2024" / "my photo é.json").read_text())
    assert back["shapes"][0]["points"] == [[5, 5], [20, 20]]


def test_wider_line_naming_an_unsupported_format_says_so(tmp_path):
    gt = _wider_tree(tmp_path, "e/anim.gif\n0\n")
    with pytest.raises(AnnotationError) as info:
        wider.read_wider(gt, tmp_path / "images")
    assert str(info.value) == (f"{gt}: line 1: 'e/anim.gif': .gif images are not supported (supported: .jpg, "
                               ".jpeg, .png, .bmp, .webp, .tif, .tiff); save it as .jpg or .png")


# ------------------------------------------------------------------------------------- YOLO

def _yolo_tree(tmp_path: Path) -> Path:
    root = tmp_path / "y"
    write_image(root / "images" / "a.jpg", 40, 30)
    (root / "labels").mkdir(parents=True)
    (root / "labels" / "a.txt").write_text("1 0.5 0.5 0.25 0.25\n")
    return root


def test_yolo_classes_txt_in_latin1_is_a_clear_error(tmp_path):
    root = _yolo_tree(tmp_path)
    (root / "classes.txt").write_bytes("face\ncaf\u00e9\n".encode("latin-1"))
    result = run("convert", root, "--from", "yolo", "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert (f"Error: {root / 'classes.txt'}: not UTF-8 text (byte 0xe9 at offset 8): is it a YOLO classes "
            "file? If so, save it as UTF-8") in result.output


def test_yolo_classes_txt_with_a_byte_order_mark_names_the_first_class_plainly(tmp_path):
    root = _yolo_tree(tmp_path)
    (root / "classes.txt").write_bytes("face\nperson\n".encode("utf-8-sig"))
    (s,) = yolo.read(root)
    assert [b.label for b in s.boxes] == ["person"]
    (root / "labels" / "a.txt").write_bytes("0 0.5 0.5 0.25 0.25\n".encode("utf-8-sig"))
    (s,) = yolo.read(root)
    assert [b.label for b in s.boxes] == ["face"]


@pytest.mark.parametrize("names,expected", [
    ({0: "face", "1": "person"}, ["face", "person"]),  # int and str keys mixed, as Ultralytics reads them: int(key)
    ({"1": "person", "0": "face"}, ["face", "person"]),  # string keys in any order
    (["face", 7], ["face", "7"]),  # a list; a number as a name becomes its text
])
def test_yolo_data_yaml_names_accepted(names, expected):
    assert yolo.names_list(names, where="data.yaml: names") == expected


@pytest.mark.parametrize("names,message", [
    ({0: "face", "0": "person"}, "class id 0 is given twice ('face' and 'person')"),  # the same id as int and str
    ({0: "face", 2: "person"}, "class ids must be 0..1, each once; got 0, 2"),  # a gap: ids would shift
    ({0: "face", "x": "person"}, "key 'x' is not a class id (0, 1, ...)"),  # a key that is no number
    ({0: "face", 1.5: "person"}, "key 1.5 is not a class id (0, 1, ...)"),  # a float key
    ({0: ["face"]}, "class 0: expected a name, got ['face']"),  # a list where a name belongs
    ({}, "no class names"),  # empty
    ("face", "expected a list or a mapping of class names, got str"),  # a bare string
    (None, "expected a list or a mapping of class names, got nothing"),  # `names:` with no value
])
def test_yolo_data_yaml_names_refused(names, message):
    with pytest.raises(AnnotationError) as info:
        yolo.names_list(names, where="data.yaml: names")
    assert str(info.value) == f"data.yaml: names: {message}"


def test_yolo_data_yaml_with_mixed_keys_through_the_cli(tmp_path):
    root = _yolo_tree(tmp_path)
    (root / "data.yaml").write_text("names:\n  0: face\n  '0': person\n")
    result = run("convert", root, "--from", "yolo", "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert f"Error: {root / 'data.yaml'}: names: class id 0 is given twice ('face' and 'person')" in result.output
    (root / "data.yaml").write_text("names:\n  0: face\n  '1': person\n")
    result = run("convert", root, "--from", "yolo", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    lm = json.loads((tmp_path / "out" / "images" / "a.json").read_text())
    assert [s["label"] for s in lm["shapes"]] == ["person"]


def test_yolo_data_yaml_that_is_not_a_mapping_or_not_utf8(tmp_path):
    root = _yolo_tree(tmp_path)
    (root / "data.yaml").write_text("- face\n- person\n")
    result = run("convert", root, "--from", "yolo", "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert f"Error: {root / 'data.yaml'}: expected a mapping with a 'names' key, got list" in result.output
    (root / "data.yaml").write_bytes("names: [caf\u00e9]\n".encode("latin-1"))
    result = run("convert", root, "--from", "yolo", "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert f"Error: {root / 'data.yaml'}: not UTF-8 text (byte 0xe9 at offset 11)" in result.output


def test_yolo_export_refuses_a_label_with_a_line_break(tmp_path):
    img = write_image(tmp_path / "a.jpg", 40, 30)
    s = Sample(img, 40, 30, boxes=(Box(1, 1, 9, 9, label="my\nface"),), image_id="a.jpg", annotation_path=img)
    with pytest.raises(AnnotationError) as info:
        yolo.write([s], tmp_path / "out")
    assert str(info.value) == (f"{img}: label 'my\\nface' contains a line break, which cannot be written to "
                               "YOLO's classes.txt (one class name per line); rename the label")
    assert not (tmp_path / "out").exists()


# -------------------------------------------------------------------------------------- GIF

def _gif_dataset(tmp_path: Path, *, image_path: str | None = None) -> Path:
    from PIL import Image

    images = tmp_path / "ds" / "images"
    images.mkdir(parents=True)
    frames = [Image.fromarray(np.full((30, 40, 3), c, np.uint8)) for c in (20, 200)]
    frames[0].save(images / "gif_anim.gif", save_all=True, append_images=frames[1:])
    jp = write_labelme_json(images / "gif_anim.gif", [(5, 5, 20, 20)], width=40, height=30)
    if image_path is not None:  # the JSON renamed away from its image: only imagePath points at it
        data = json.loads(jp.read_text())
        data["imagePath"] = image_path
        jp.rename(images / "renamed.json")
        (images / "renamed.json").write_text(json.dumps(data))
    ok = write_image(images / "ok.jpg", 40, 30, box=(5, 5, 20, 20))
    write_labelme_json(ok, [(5, 5, 20, 20)], width=40, height=30)
    return tmp_path / "ds"


SUPPORTED = "(supported: .jpg, .jpeg, .png, .bmp, .webp, .tif, .tiff); save it as .jpg or .png"


def test_labelled_gif_is_named_as_an_unsupported_format_by_validate_and_convert(tmp_path):
    ds = _gif_dataset(tmp_path)
    message = f"its image gif_anim.gif is not read: .gif images are not supported {SUPPORTED}"
    result = run("validate", ds)
    assert result.exit_code == 1
    assert message in result.output and "no image named" not in result.output
    result = run("convert", ds, "--from", "labelme", "--to", "coco", "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert message in result.output
    assert not (tmp_path / "out").exists()


def test_json_whose_image_path_names_a_gif_says_the_format(tmp_path):
    ds = _gif_dataset(tmp_path, image_path="gif_anim.gif")
    result = run("validate", ds)
    assert result.exit_code == 1
    assert f"its image 'gif_anim.gif' is not read: .gif images are not supported {SUPPORTED}" in result.output


def test_coco_file_naming_a_gif_is_refused_before_anything_is_written(tmp_path):
    from datatool.core.errors import ImageError
    from datatool.core.images import probe

    _gif_dataset(tmp_path)
    images = tmp_path / "ds" / "images"
    coco = tmp_path / "ann.json"
    coco.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "gif_anim.gif", "width": 40, "height": 30},
                   {"id": 2, "file_name": "ok.jpg", "width": 40, "height": 30}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 15, 15]},
                        {"id": 2, "image_id": 2, "category_id": 1, "bbox": [5, 5, 15, 15]}],
        "categories": [{"id": 1, "name": "face"}]}))
    result = run("convert", coco, "--from", "coco", "--images", images, "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert f"{images / 'gif_anim.gif'}: .gif images are not supported {SUPPORTED}" in result.output
    assert not (tmp_path / "out").exists()
    # --skip-errors leaves the GIF out instead of writing a labelme folder whose image no stage lists
    result = run("convert", coco, "--from", "coco", "--images", images, "--out", tmp_path / "out", "--skip-errors")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == ["ok.jpg", "ok.json"]
    with pytest.raises(ImageError) as info:  # every header read refuses it too
        probe(images / "gif_anim.gif")
    assert str(info.value) == f"{images / 'gif_anim.gif'}: .gif images are not supported {SUPPORTED}"


# ----------------------------------------------------------------------------- 16-bit PNG

def _png16(path: Path, box, *, width=64, height=48) -> Path:
    """A 16-bit grey PNG: background 5000, a 60000 square at `box` (both above 255, where Pillow's
    own conversion clipped everything to white)."""
    from PIL import Image

    values = np.full((height, width), 5000, np.uint16)
    x0, y0, x1, y1 = box
    values[y0:y1, x0:x1] = 60000
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values).save(path)
    return path


def test_16_bit_grey_png_decodes_to_its_size_and_scaled_content(tmp_path):
    from PIL import Image

    from datatool.core.images import decode_rgb, load_rgb, probe

    path = _png16(tmp_path / "deep.png", (36, 10, 56, 30))
    assert Image.open(path).mode == "I;16"
    facts = probe(path)
    assert (facts.width, facts.height) == (64, 48)
    rgb = load_rgb(path)
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
    assert (rgb[20, 45] == 60000 >> 8).all() and (rgb[0, 0] == 5000 >> 8).all()  # the high byte, as OpenCV
    assert (decode_rgb(path.read_bytes()) == rgb).all()
    # a 32-bit integer image (mode I, e.g. a TIFF) is read as 16-bit values, clipped
    buf = io.BytesIO()
    Image.fromarray(np.array([[-5, 70000], [256, 65535]], np.int32), mode="I").save(buf, format="TIFF")
    assert decode_rgb(buf.getvalue())[..., 0].tolist() == [[0, 255], [1, 255]]


def test_16_bit_grey_png_record_has_its_box_on_the_face(tmp_path):
    from test_split import read_back

    from datatool.split import split

    box = (36, 10, 56, 30)
    img = _png16(tmp_path / "ds" / "images" / "deep.png", box)
    write_labelme_json(img, [box], width=64, height=48)
    out = tmp_path / "tf"
    summary = split(tmp_path / "ds", out=out, ratios=(1, 0, 0), progress=False)
    assert summary.reencoded == 1
    (rec,) = read_back(out)["train"]
    image = rec["image"]
    h, w = image.shape[:2]
    assert (w, h) == (64, 48) == (rec["width"], rec["height"])
    x0, y0, x1, y1 = (rec["boxes"][0] * [w, h, w, h]).round().astype(int)
    assert (x0, y0, x1, y1) == box
    inside = image[y0 + 1:y1 - 1, x0 + 1:x1 - 1].mean()
    outside = np.concatenate([image[:, :x0 - 1].reshape(-1, 3), image[:, x1 + 1:].reshape(-1, 3)]).mean()
    assert inside > 200 and outside < 40


# ------------------------------------------------------------------------------ small ones

@pytest.mark.parametrize("command", [
    ["split", "DS", "--out", "OUT"],
    ["augment", "DS", "--out", "OUT"],
    ["validate", "DS"],
    ["report", "DS", "--out", "OUT"],
])
def test_workers_below_one_is_refused_by_every_command(tiny_dataset, tmp_path, command):
    args = [str(tiny_dataset) if a == "DS" else str(tmp_path / "out") if a == "OUT" else a for a in command]
    result = run(*args, "--workers", "0")
    assert result.exit_code == 2  # click's exit code for a bad option value
    assert "Error: Invalid value for '--workers': 0 is not in the range x>=1." in result.output
    assert not (tmp_path / "out").exists()


def test_split_library_refuses_workers_below_one(tiny_dataset, tmp_path):
    from datatool.split import split

    with pytest.raises(DatatoolError, match=r"^--workers: expected at least 1, got 0$"):
        split(tiny_dataset, out=tmp_path / "tf", workers=0, progress=False)
    assert not (tmp_path / "tf").exists()


def test_split_of_a_detection_set_without_any_face_warns(tmp_path):
    images = tmp_path / "ds" / "images"
    for k in range(3):
        img = write_image(images / f"neg_{k}.jpg", seed=k)
        write_labelme_json(img, [], width=64, height=48)
    result = run("split", tmp_path / "ds", "--out", tmp_path / "tf")
    assert result.exit_code == 0, result.output
    assert ("warning: no face in any of the 3 labeled image(s): every record is a negative, so a detector "
            "cannot learn from these shards (is this the right folder?)") in result.output
    summary = json.loads((tmp_path / "tf" / "dataset.json").read_text())
    assert summary["counts"]["train"]["faces"] == 0


def test_split_with_faces_does_not_give_the_no_face_warning(tiny_dataset, tmp_path):
    result = run("split", tiny_dataset, "--out", tmp_path / "tf")
    assert result.exit_code == 0, result.output
    assert "no face in any" not in result.output
