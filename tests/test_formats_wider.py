"""WIDER FACE gt files: the committed seven-line golden file, quirks, malformed input, round trips."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import write_image
from datatool.core.errors import AnnotationError, DatatoolError
from datatool.formats import wider
from datatool.core.sample import Box, Sample

FILES = Path(__file__).parent / "files" / "wider"
GT = FILES / "wider_face_val_bbx_gt.txt"
IMAGES = FILES / "images"


def test_golden_file_reads_with_its_quirks():
    samples = wider.read_wider(GT, IMAGES)
    assert [s.image_id for s in samples] == ["0--Parade/0_Parade_marchingband_1_5.jpg",
                                            "1--Handshaking/1_Handshaking_1_7.jpg"]
    parade, handshake = samples
    assert (parade.width, parade.height) == (64, 48)  # sizes come from the image headers
    # x y w h -> continuous corners: x_max = x + w
    assert parade.boxes[0].xyxy == (10, 8, 30, 32)
    assert dict(parade.boxes[0].attributes) == {"blur": 1, "expression": 0, "illumination": 0,
                                                "invalid": 0, "occlusion": 1, "pose": 0}
    # the zero-size face stays readable (convert's filters drop it), with its attributes
    assert parade.boxes[1].xyxy == (30, 12, 30, 12)
    assert parade.boxes[1].attributes["invalid"] == 1 and parade.boxes[1].attributes["blur"] == 2
    # the 0-face image is a negative: its all-zero row is not a face
    assert handshake.boxes == () and handshake.is_negative


def test_golden_file_round_trips_byte_for_byte(tmp_path):
    samples = wider.read_wider(GT, IMAGES)
    out = wider.write_wider(samples, tmp_path / "gt.txt")
    assert out.read_text() == GT.read_text()


def test_write_copies_the_images_tree_and_reads_back_equal(tmp_path):
    samples = wider.read_wider(GT, IMAGES)
    wider.write(samples, tmp_path / "out")
    assert (tmp_path / "out" / "images" / "0--Parade" / "0_Parade_marchingband_1_5.jpg").read_bytes() == \
        (IMAGES / "0--Parade" / "0_Parade_marchingband_1_5.jpg").read_bytes()
    back = wider.read(tmp_path / "out")  # a folder with the gt file and images/ beside it
    assert [(s.image_id, s.boxes, s.width, s.height) for s in back] == \
        [(s.image_id, s.boxes, s.width, s.height) for s in samples]


def test_write_refuses_to_overwrite_and_writes_nothing(tmp_path):
    samples = wider.read_wider(GT, IMAGES)
    out = tmp_path / "out"
    (out / "images" / "0--Parade").mkdir(parents=True)
    existing = out / "images" / "0--Parade" / "0_Parade_marchingband_1_5.jpg"
    existing.write_bytes(b"mine")
    with pytest.raises(DatatoolError, match="already exists"):
        wider.write(samples, out)
    assert existing.read_bytes() == b"mine"
    assert not (out / wider.GT_NAME).exists()
    wider.write(samples, out, overwrite=True)
    assert existing.read_bytes() != b"mine"


def test_box_without_attributes_is_written_with_zeros():
    s = Sample("a.jpg", 100, 80, boxes=(Box(1.5, 2, 11.5, 22),), image_id="e/a.jpg")
    assert wider.dumps_wider([s]) == "e/a.jpg\n1\n1.5 2 10 20 0 0 0 0 0 0\n"


def _gt(tmp_path, text: str) -> Path:
    write_image(tmp_path / "images" / "e" / "a.jpg", 40, 30)
    write_image(tmp_path / "images" / "e" / "b.jpg", 40, 30)
    gt = tmp_path / "gt.txt"
    gt.write_text(text)
    return gt


@pytest.mark.parametrize("text,faces", [
    ("e/a.jpg\n0\ne/b.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n", [0, 1]),  # 0-face image without the zero row
    ("e/a.jpg\n1\n1 2 3 4\n", [1]),  # 4-column rows (no attributes), as some re-distributions have
    ("\ne/a.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n\n\n", [1]),  # blank lines are tolerated
    ("e/a.jpg\r\n1\r\n1 2 3 4 0 0 0 0 0 0\r\n", [1]),  # Windows line ends
])
def test_tolerated_variants(tmp_path, text, faces):
    samples = wider.read_wider(_gt(tmp_path, text), tmp_path / "images")
    assert [len(s.boxes) for s in samples] == faces


@pytest.mark.parametrize("text,match", [
    ("e/a.jpg\nx\n", r"line 2: expected the face count"),  # count is not a number
    ("e/a.jpg\n-1\n", r"line 2: face count must be >= 0"),  # negative count
    ("e/a.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n", r"line 4: file ends before the 2 faces"),  # truncated file
    ("e/a.jpg\n1\n1 2 3\n", r"line 3: expected 10 numbers"),  # short row
    ("e/a.jpg\n1\n1 2 3 four 0 0 0 0 0 0\n", r"line 3: expected 10 numbers"),  # word in a row
    ("e/a.jpg\n1\n1 2 nan 4 0 0 0 0 0 0\n", r"line 3: expected 10 numbers"),  # non-finite number
    ("12 3 4 5\n", r"line 1: expected an image path"),  # a row where a file line belongs
    ("e/a.jpg\n", r"line 2: missing face count"),  # file line with nothing after
    ("../e/a.jpg\n0\n", r"line 1: .* not a relative image path"),  # escaping the images folder
])
def test_malformed_file_names_file_and_line(tmp_path, text, match):
    gt = _gt(tmp_path, text)
    with pytest.raises(AnnotationError, match=match) as info:
        wider.read_wider(gt, tmp_path / "images")
    assert str(gt) in str(info.value)


def test_missing_image_and_negative_size_are_issues_not_crashes(tmp_path):
    gt = _gt(tmp_path, "e/a.jpg\n1\n1 2 -3 4 0 0 0 0 0 0\ne/gone.jpg\n0\ne/b.jpg\n1\n30 20 20 20 0 0 0 0 0 0\n")
    issues = []
    samples = wider.read_wider(gt, tmp_path / "images", issues=issues)
    # e/a.jpg has a broken face: left out whole; e/gone.jpg has no image; e/b.jpg's box is clipped
    assert [s.image_id for s in samples] == ["e/b.jpg"]
    assert samples[0].boxes[0].xyxy == (30, 20, 40, 30)
    assert sorted((i.severity, i.field, i.code) for i in issues) == [
        ("error", "line 3", "bad-box"), ("error", "line 4", "bad-image"), ("warning", "line 8", "box-out-of-bounds")]
    with pytest.raises(AnnotationError, match="line 3: negative box size"):
        wider.read_wider(gt, tmp_path / "images")  # without an issues list the first error raises


def test_read_needs_the_images_folder(tmp_path):
    gt = tmp_path / "gt.txt"
    gt.write_text("e/a.jpg\n0\n")
    with pytest.raises(DatatoolError, match="--images"):
        wider.read(gt)
    with pytest.raises(DatatoolError, match="images folder not found"):
        wider.read(gt, images=tmp_path / "nope")
