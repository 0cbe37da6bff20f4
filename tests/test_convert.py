"""`convert` and `merge`: the library functions and the CLI through click's CliRunner."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import write_image, write_labelme_json
from datatool.cli import cli
from datatool.convert import FaceFilter, ReadErrors, convert, merge, merge_prefixes
from datatool.dataset import load_dataset
from datatool.core.errors import DatatoolError
from datatool.core.fsutil import read_record
from datatool.core.sample import Box

FILES = Path(__file__).parent / "files" / "wider"
GT = FILES / "wider_face_val_bbx_gt.txt"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _wider(tmp_path, rows_a: str) -> Path:
    """A WIDER gt with image e/a.jpg (faces given) and e/b.jpg (no face); images under tmp/images."""
    write_image(tmp_path / "images" / "e" / "a.jpg", 100, 80, seed=1)
    write_image(tmp_path / "images" / "e" / "b.jpg", 100, 80, seed=2)
    n = len(rows_a.strip().splitlines())
    gt = tmp_path / "gt.txt"
    gt.write_text(f"e/a.jpg\n{n}\n{rows_a.strip()}\ne/b.jpg\n0\n0 0 0 0 0 0 0 0 0 0\n")
    return gt


def test_wider_to_labelme_gives_a_dataset_labelme_can_open(tmp_path):
    from labelme import LabelFile

    out = tmp_path / "ds"
    result = convert(GT, out, src_format="wider", dst_format="labelme", images=FILES / "images")
    assert (result.images, result.faces, result.negatives, result.skipped_faces) == (2, 1, 1, 1)
    parade = out / "images" / "0--Parade" / "0_Parade_marchingband_1_5.json"
    lf = LabelFile(str(parade))  # real labelme opens it, image beside it
    assert lf.shapes[0]["points"] == [[10.0, 8.0], [30.0, 32.0]]
    ds = load_dataset(out)
    assert [s.image_id for s in ds.samples] == ["0--Parade/0_Parade_marchingband_1_5.jpg",
                                               "1--Handshaking/1_Handshaking_1_7.jpg"]
    assert ds.samples[1].is_negative and ds.issues == []
    record = read_record(out)
    assert record["src_format"] == "wider" and record["counts"]["faces"] == 1 and record["parents"] == [str(GT)]


def test_wider_attributes_survive_wider_to_labelme_to_wider(tmp_path):
    convert(GT, tmp_path / "lm", src_format="wider", dst_format="labelme", images=FILES / "images")
    convert(tmp_path / "lm", tmp_path / "w", src_format="labelme", dst_format="wider")
    text = (tmp_path / "w" / "wider_face_bbx_gt.txt").read_text()
    # the zero-size face was dropped by convert; the rest is the golden file line for line
    assert text == GT.read_text().replace("30 12 0 0 2 0 0 1 0 0\n", "").replace("\n2\n10 8", "\n1\n10 8")
    assert (tmp_path / "w" / "images" / "1--Handshaking" / "1_Handshaking_1_7.jpg").is_file()


@pytest.mark.parametrize("face_filter,faces_kept,images_kept", [
    (FaceFilter(), 4, 2),  # defaults: only the zero-size face goes
    (FaceFilter(min_face=10), 3, 2),  # the 8-px face goes too
    (FaceFilter(skip_invalid=True), 3, 2),  # the invalid face goes too
    (FaceFilter(max_blur=1), 3, 2),  # the heavily blurred face goes too
    (FaceFilter(min_face=10, skip_invalid=True, max_blur=0), 1, 2),  # all three filters at once
    (FaceFilter(min_face=25), 0, 1),  # a.jpg loses every face: skipped, not made a negative
])
def test_filters(tmp_path, face_filter, faces_kept, images_kept):
    gt = _wider(tmp_path, """
        10 10 20 20 0 0 0 0 0 0
        40 10 8 8 0 0 0 0 0 0
        60 10 20 20 0 0 0 1 0 0
        10 40 20 20 2 0 0 0 0 0
        50 50 0 0 0 0 0 0 0 0
    """.replace("        ", ""))
    result = convert(gt, tmp_path / "out", src_format="wider", dst_format="coco", images=tmp_path / "images",
                     face_filter=face_filter)
    assert (result.faces, result.images) == (faces_kept, images_kept)
    assert result.skipped_faces == 5 - faces_kept
    assert result.negatives == 1  # e/b.jpg had no face to begin with: it stays a negative


def test_unlabeled_images_are_left_out_and_counted(tiny_dataset, tmp_path):
    result = convert(tiny_dataset, tmp_path / "out", src_format="labelme", dst_format="csv")
    assert (result.images, result.faces, result.negatives, result.unlabeled) == (5, 4, 1, 1)
    assert "1 unlabeled images left out" in result.summary()


def test_errors_stop_before_writing_unless_skipped(tiny_dataset, tmp_path):
    jp = tiny_dataset / "images" / "face_1.json"
    data = json.loads(jp.read_text())
    data["shapes"][0]["shape_type"] = "circle"
    jp.write_text(json.dumps(data))
    (tiny_dataset / "images" / "face_2.jpg").unlink()  # its JSON remains: an orphan, a warning
    with pytest.raises(ReadErrors) as info:
        convert(tiny_dataset, tmp_path / "out", src_format="labelme", dst_format="coco")
    assert not (tmp_path / "out").exists()
    assert [i.field for i in info.value.issues if i.severity == "error"] == ["shapes[0].shape_type"]
    result = convert(tiny_dataset, tmp_path / "out", src_format="labelme", dst_format="coco", skip_errors=True)
    assert result.bad_samples == 1 and result.images == 3


def test_convert_refuses_output_inside_source(tiny_dataset):
    with pytest.raises(DatatoolError, match="inside the source"):
        convert(tiny_dataset, tiny_dataset / "images" / "out", src_format="labelme", dst_format="voc")


# --- merge -----------------------------------------------------------------------------------

def _session(root: Path, name: str, *, session: str, seed: int) -> Path:
    ds = root / name
    img = write_image(ds / "images" / "frame_000.jpg", seed=seed, box=(5, 5, 25, 25))
    write_labelme_json(img, [(5, 5, 25, 25)], width=64, height=48,
                       extra={"facekit": {"group": f"g{seed}", "session": session}})
    write_image(ds / "images" / "frame_001.jpg", seed=seed + 1)  # unlabeled
    write_image(ds / "people" / "alice" / "crop_0.jpg", 16, 16, seed=seed + 2)
    return ds


def test_merge_keeps_everything_and_keys_unique(tmp_path):
    a = _session(tmp_path / "x", "me", session="s1", seed=1)
    b = _session(tmp_path / "y", "me", session="s2", seed=5)  # same folder name, same keys
    polygon = {"label": "face", "points": [[1, 1], [9, 1], [5, 9]], "shape_type": "polygon", "group_id": None,
               "description": "", "flags": {}, "mask": None}
    jp = b / "images" / "frame_000.json"
    data = json.loads(jp.read_text())
    data["shapes"].append(polygon)  # a shape facekit would only read as a box: kept as drawn
    jp.write_text(json.dumps(data))

    result = merge([a, b], tmp_path / "all")
    assert result.prefixes == {str(a): "me", str(b): "me-2"}
    ds = load_dataset(tmp_path / "all")
    assert [s.image_id for s in ds.samples] == ["me-2/frame_000.jpg", "me-2/frame_001.jpg",
                                               "me/frame_000.jpg", "me/frame_001.jpg"]
    assert [s.labeled for s in ds.samples] == [True, False, True, False]
    merged = json.loads((tmp_path / "all" / "images" / "me-2" / "frame_000.json").read_text())
    assert merged["imagePath"] == "frame_000.jpg"
    assert merged["facekit"] == {"group": "g5", "session": "s2"}
    assert merged["shapes"] == data["shapes"]
    assert sorted(p.relative_to(tmp_path / "all").as_posix() for p in (tmp_path / "all" / "people").rglob("*.jpg")) \
        == ["people/alice/me-2/crop_0.jpg", "people/alice/me/crop_0.jpg"]
    record = read_record(tmp_path / "all")
    assert [p["path"] for p in record["parents"]] == [str(a), str(b)]
    assert [p["prefix"] for p in record["parents"]] == ["me", "me-2"]


def test_merge_rewrites_image_path_and_copies_broken_json_verbatim(tmp_path):
    a = _session(tmp_path, "a", session="s1", seed=1)
    data = json.loads((a / "images" / "frame_000.json").read_text())
    data["imagePath"] = "..\\old\\place\\frame_000.jpg"  # written on Windows from elsewhere
    (a / "images" / "frame_000.json").write_text(json.dumps(data))
    (a / "images" / "frame_001.json").write_text("{broken")
    (a / "images" / "lost.json").write_text("{}")
    result = merge([a], tmp_path / "all")
    assert json.loads((tmp_path / "all" / "images" / "a" / "frame_000.json").read_text())["imagePath"] == "frame_000.jpg"
    assert (tmp_path / "all" / "images" / "a" / "frame_001.json").read_text() == "{broken"
    assert (tmp_path / "all" / "images" / "a" / "lost.json").read_text() == "{}"
    assert sorted(i.code for i in result.issues) == ["bad-json", "orphan-json"]


@pytest.mark.parametrize("sources,match", [
    (["a", "a"], "given twice"),  # the same dataset twice
    (["a", "missing"], "missing: dataset folder not found"),
    (["a", "all"], "inside the output folder"),  # a source inside --out
])
def test_merge_refuses_bad_sources(tmp_path, sources, match):
    _session(tmp_path, "a", session="s1", seed=1)
    (tmp_path / "all").mkdir()
    with pytest.raises(DatatoolError, match=match):
        merge([tmp_path / s for s in sources], tmp_path / "all" if "all" not in sources else tmp_path / "all" / "..")


def test_merge_prefixes_are_unique():
    assert merge_prefixes([Path("x/me"), Path("y/me"), Path("z/me-2"), Path("w/other")]) == \
        ["me", "me-2", "me-2-2", "other"]


# --- CLI -------------------------------------------------------------------------------------

def test_cli_convert_wider_to_labelme(tmp_path):
    result = run("convert", GT, "--from", "wider", "--images", FILES / "images", "--out", tmp_path / "ds")
    assert result.exit_code == 0, result.output
    assert "2 images, 1 faces, 1 negatives; skipped by filter: 1 faces, 0 images" in result.output
    assert (tmp_path / "ds" / "images" / "0--Parade" / "0_Parade_marchingband_1_5.json").is_file()


def test_cli_convert_refuses_to_overwrite_then_does_with_the_flag(tmp_path):
    args = ["convert", GT, "--from", "wider", "--images", FILES / "images", "--out", tmp_path / "ds"]
    assert run(*args).exit_code == 0
    target = tmp_path / "ds" / "images" / "0--Parade" / "0_Parade_marchingband_1_5.json"
    target.write_text("edited by hand")
    result = run(*args)
    assert result.exit_code == 1
    assert "use --overwrite" in result.output and "Traceback" not in result.output
    assert target.read_text() == "edited by hand"
    assert run(*args, "--overwrite").exit_code == 0
    assert json.loads(target.read_text())["shapes"]


@pytest.mark.parametrize("text,message", [
    (b"0--Parade/0_Parade_marchingband_1_5.jpg\nmany\n", "line 2: expected the face count"),  # bad count
    (b"just some words\n", "line 1: expected an image path"),  # not a gt file
    (b"\x89PNG\r\n\x1a\n\x00\xff", "not UTF-8 text"),  # binary, e.g. an image given by mistake
])
def test_cli_bad_file_gives_one_clear_line(tmp_path, text, message):
    gt = tmp_path / "gt.txt"
    gt.write_bytes(text)
    result = run("convert", gt, "--from", "wider", "--images", FILES / "images", "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith(f"Error: {gt}: ")
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_cli_convert_lists_issues_and_fails_on_errors(tiny_dataset, tmp_path):
    (tiny_dataset / "images" / "face_3.json").write_text("{nope")
    result = run("convert", tiny_dataset, "--from", "labelme", "--to", "yolo", "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert "face_3.json" in result.output and "not valid JSON" in result.output
    assert "--skip-errors" in result.output
    result = run("convert", tiny_dataset, "--from", "labelme", "--to", "yolo", "--out", tmp_path / "out",
                 "--skip-errors")
    assert result.exit_code == 0, result.output
    assert "4 images, 3 faces, 1 negatives" in result.output


@pytest.mark.parametrize("args,message", [
    (["--from", "pascal"], "Invalid value for '--from'"),  # unknown format
    (["--from", "wider", "--max-blur", "3"], "Invalid value for '--max-blur'"),
    (["--from", "wider"], "--images"),  # WIDER without its images tree
])
def test_cli_convert_bad_options(tmp_path, args, message):
    gt = shutil.copy(GT, tmp_path / "gt.txt")  # no images/ beside this copy
    result = run("convert", gt, "--out", tmp_path / "out", *args)
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output


def test_cli_merge(tmp_path):
    a = _session(tmp_path, "morning", session="s1", seed=1)
    b = _session(tmp_path, "evening", session="s2", seed=5)
    result = run("merge", a, b, "--out", tmp_path / "all")
    assert result.exit_code == 0, result.output
    assert "4 images (2 with labelme JSON, 2 unlabeled) from 2 datasets" in result.output
    again = run("merge", a, b, "--out", tmp_path / "all")
    assert again.exit_code == 1 and "use --overwrite" in again.output
    shutil.rmtree(b)
    gone = run("merge", a, b, "--out", tmp_path / "all2")
    assert gone.exit_code == 1 and "dataset folder not found" in gone.output and "Traceback" not in gone.output


def test_zero_size_wider_faces_never_reach_labelme(tmp_path):
    gt = _wider(tmp_path, "50 50 0 10 0 0 0 0 0 0")
    result = convert(gt, tmp_path / "out", src_format="wider", dst_format="labelme", images=tmp_path / "images")
    # e/a.jpg's only face has no width: the image is skipped, not turned into a false negative
    assert (result.images, result.skipped_images, result.negatives) == (1, 1, 1)
    assert not (tmp_path / "out" / "images" / "e" / "a.jpg").exists()
    assert Box(50, 50, 50, 60).area == 0
