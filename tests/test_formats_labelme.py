"""labelme JSON: files written by real labelme 6.3.1 read back exactly; normalizing; folder round trips."""

from __future__ import annotations

import json

import pytest

from conftest import write_image, write_labelme_json
from datatool.core.errors import AnnotationError, DatatoolError
from datatool.dataset import read_labelme_folder, write_labelme_folder
from datatool.formats import labelme as lm
from datatool.core.sample import Box, Sample


def _labelme_shape(points, *, label="face", shape_type="rectangle", group_id=None, description="", flags=None):
    return {"label": label, "points": points, "group_id": group_id, "description": description,
            "shape_type": shape_type, "flags": flags or {}, "mask": None}


def test_file_saved_by_real_labelme_reads_back_exactly(tmp_path):
    from labelme import LabelFile

    img = write_image(tmp_path / "a.jpg", 64, 48)
    shapes = [_labelme_shape([[10.5, 8.25], [30.0, 40.75]]),
              _labelme_shape([[50.0, 5.0], [60.0, 20.0]], label="person", group_id=3, description="far away",
                             flags={"blurry": True})]
    LabelFile().save(str(tmp_path / "a.json"), shapes=shapes, image_path="a.jpg", image_height=48,
                     image_width=64, other_data={"facekit": {"group": "abc", "session": "s1"}}, flags={"ok": True})
    issues = []
    s = lm.read_labelme(tmp_path / "a.json", issues=issues)
    assert issues == []
    assert s.image_path == img and (s.width, s.height) == (64, 48)
    assert [b.xyxy for b in s.boxes] == [(10.5, 8.25, 30.0, 40.75), (50.0, 5.0, 60.0, 20.0)]
    assert [b.label for b in s.boxes] == ["face", "person"]
    assert dict(s.boxes[1].attributes) == {"group_id": 3, "description": "far away", "flags": {"blurry": True}}
    assert s.group == "abc" and s.attributes == {"session": "s1", "flags": {"ok": True}}


def test_labelme_keeps_our_facekit_object_when_it_loads_and_resaves(tmp_path):
    from labelme import LabelFile

    img = write_image(tmp_path / "a.jpg", 64, 48)
    sample = Sample(img, 64, 48, boxes=(Box(4, 5, 20, 30),), group="g123", attributes={"session": "s9"})
    lm.write_labelme(sample, tmp_path / "a.json")
    lf = LabelFile(str(tmp_path / "a.json"))  # what the labelme GUI does when it opens the file...
    shapes = [{k: v for k, v in sh.items() if k != "other_data"} | sh["other_data"] for sh in lf.shapes]
    lf.save(str(tmp_path / "a.json"), shapes=shapes, image_path=lf.image_path, image_height=48,
            image_width=64, other_data=lf.other_data, flags=lf.flags)  # ...and when it saves it
    back = lm.read_labelme(tmp_path / "a.json")
    assert back.group == "g123" and back.attributes == {"session": "s9"}
    assert back.boxes == sample.boxes


def test_file_we_write_loads_in_real_labelme(tmp_path):
    from labelme import LabelFile

    img = write_image(tmp_path / "images" / "e" / "a.jpg", 64, 48)
    s = Sample(img, 64, 48, boxes=(Box(4, 5, 20, 30, attributes={"blur": 2, "pose": 1}),), image_id="e/a.jpg")
    write_labelme_folder([s], tmp_path / "out")
    lf = LabelFile(str(tmp_path / "out" / "images" / "e" / "a.json"))  # raises if labelme cannot open it
    assert lf.shapes[0]["points"] == [[4.0, 5.0], [20.0, 30.0]]
    assert lf.shapes[0]["description"] == "blur=2 pose=1"  # attributes labelme has no field for, visible


@pytest.mark.parametrize("points,expected,codes", [
    ([[30, 40], [10, 20]], (10, 20, 30, 40), ["corner-order"]),  # dragged from bottom-right
    ([[30, 20], [10, 40]], (10, 20, 30, 40), ["corner-order"]),  # dragged from top-right
    ([[-5, 10], [20, 60]], (0, 10, 20, 48), ["box-out-of-bounds"]),  # partly outside: clipped
    ([[70, 50], [50, 30]], (50, 30, 64, 48), ["corner-order", "box-out-of-bounds"]),  # both at once
    ([[10, 20], [30, 40]], (10, 20, 30, 40), []),  # already fine: nothing reported
])
def test_rectangles_any_corner_order_and_outside_are_normalized_and_counted(tmp_path, points, expected, codes):
    img = write_image(tmp_path / "a.jpg", 64, 48)
    jp = write_labelme_json(img, [], width=64, height=48)
    data = json.loads(jp.read_text())
    data["shapes"] = [_labelme_shape(points)]
    jp.write_text(json.dumps(data))
    issues = []
    s = lm.read_labelme(jp, issues=issues)
    assert s.boxes[0].xyxy == expected
    assert [i.code for i in issues] == codes
    assert all(i.field == "shapes[0].points" and i.fixable for i in issues)


def test_polygon_becomes_its_bounding_box_with_a_warning(tmp_path):
    img = write_image(tmp_path / "a.jpg", 64, 48)
    jp = write_labelme_json(img, [], width=64, height=48)
    data = json.loads(jp.read_text())
    data["shapes"] = [_labelme_shape([[10, 5], [40, 12], [25, 30]], shape_type="polygon")]
    jp.write_text(json.dumps(data))
    issues = []
    s = lm.read_labelme(jp, issues=issues)
    assert s.boxes[0].xyxy == (10, 5, 40, 30)
    assert [(i.severity, i.field, i.code) for i in issues] == [("warning", "shapes[0].shape_type", "polygon")]


@pytest.mark.parametrize("shape,match", [
    (_labelme_shape([[10, 10], [20, 20]], shape_type="circle"), r"shapes\[1\]\.shape_type: 'circle' shapes are not supported"),
    (_labelme_shape([[10, 10]], shape_type="point"), r"shapes\[1\]\.shape_type: 'point' shapes are not supported"),
    (_labelme_shape([[10, 10], [20, 20], [30, 30]]), r"shapes\[1\]\.points: rectangle needs 2 points"),
    (_labelme_shape([[10, "a"], [20, 20]]), r"shapes\[1\]\.points: expected a list of \[x, y\]"),
    (_labelme_shape([[10, 10], [20, 20]], label=""), r"shapes\[1\]\.label: missing or empty label"),
    (_labelme_shape([[10, 10], [10, 30]]), r"shapes\[1\]\.points: zero-area box"),
])
def test_bad_shape_is_rejected_naming_file_and_shape_index(tmp_path, shape, match):
    img = write_image(tmp_path / "a.jpg", 64, 48)
    jp = write_labelme_json(img, [(1, 1, 5, 5)], width=64, height=48)
    data = json.loads(jp.read_text())
    data["shapes"].append(shape)
    jp.write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match=match) as info:
        lm.read_labelme(jp)
    assert str(jp) in str(info.value)
    issues = []
    s = lm.read_labelme(jp, issues=issues)  # collecting: the good shape is kept, the bad one reported
    assert len(s.boxes) == 1 and [i.severity for i in issues] == ["error"]


@pytest.mark.parametrize("text,match", [
    ("{not json", r"not valid JSON \(line 1"),  # broken JSON
    ('{"version": "6.3.1"}', r"not a labelme file"),  # JSON but no shapes
    ('{"shapes": [], "imageWidth": 0, "imageHeight": 48}', r"imageWidth/imageHeight"),  # bad size
])
def test_broken_file_is_one_clear_error(tmp_path, text, match):
    jp = tmp_path / "a.json"
    jp.write_text(text)
    with pytest.raises(AnnotationError, match=match) as info:
        lm.read_labelme(jp)
    assert str(jp) in str(info.value)


@pytest.mark.parametrize("attributes", [
    {},  # plain box
    {"blur": 2, "expression": 0, "illumination": 1, "invalid": 0, "occlusion": 2, "pose": 1},  # WIDER's six
    {"group_id": 4, "description": "free text, kept as it is"},  # labelme's own fields
    {"score": 0.75, "source": "mtcnn"},  # float and word values
])
def test_folder_round_trip_keeps_boxes_and_attributes(tiny_dataset, tmp_path, attributes):
    samples = read_labelme_folder(tiny_dataset)
    samples = [s.replace(boxes=tuple(Box(*b.xyxy, attributes=attributes) for b in s.boxes), group="g" * s.labeled)
               for s in samples]  # an unlabeled image has no JSON to hold a group
    write_labelme_folder(samples, tmp_path / "out")
    back = read_labelme_folder(tmp_path / "out")
    key = lambda s: (s.image_id, s.width, s.height, s.boxes, s.labeled, s.group)  # noqa: E731
    assert [key(s) for s in back] == [key(s) for s in samples]
    # unlabeled stays unlabeled (image copied, no JSON), negatives stay negatives
    assert not (tmp_path / "out" / "images" / "unlabeled_0.json").exists()
    assert (tmp_path / "out" / "images" / "unlabeled_0.jpg").exists()
    assert (tmp_path / "out" / "images" / "neg_0.json").exists()


def test_folder_write_refuses_existing_json_before_copying_anything(tiny_dataset, tmp_path):
    samples = read_labelme_folder(tiny_dataset)
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "images" / "neg_0.json").write_text("mine")
    with pytest.raises(DatatoolError, match=r"neg_0.json: already exists"):
        write_labelme_folder(samples, out)
    assert (out / "images" / "neg_0.json").read_text() == "mine"
    assert sorted(p.name for p in (out / "images").iterdir()) == ["neg_0.json"]


def test_folder_read_reports_orphan_json_and_bad_json(tiny_dataset):
    (tiny_dataset / "images" / "ghost.json").write_text(json.dumps({"shapes": [], "imageWidth": 4, "imageHeight": 4}))
    (tiny_dataset / "images" / "face_0.json").write_text("{oops")
    issues = []
    samples = read_labelme_folder(tiny_dataset, issues=issues)
    assert "face_0.jpg" not in [s.image_id for s in samples]
    assert sorted(i.code for i in issues) == ["bad-json", "orphan-json"]
    with pytest.raises(AnnotationError, match="face_0.json"):
        read_labelme_folder(tiny_dataset)


def test_errors_become_issues_by_their_parts_even_with_colons_in_the_path(tmp_path):
    from datatool.dataset import load_dataset

    root = tmp_path / "shoot: day 1"  # ": " in a folder name used to cut the message in the wrong place
    write_image(root / "images" / "a.jpg", 8, 8)
    (root / "images" / "a.json").write_text("{oops")
    write_image(root / "images" / "b.jpg", 8, 8)
    (root / "images" / "b.json").write_text(json.dumps({"shapes": 3, "imageWidth": 8, "imageHeight": 8}))
    (root / "images" / "c.jpg").write_text("not a picture")
    ds = load_dataset(root)
    by_file = {i.file: i for i in ds.issues}
    bad_json = by_file[str(root / "images" / "a.json")]
    assert (bad_json.code, bad_json.field) == ("bad-json", "") and bad_json.message.startswith("not valid JSON")
    bad_shapes = by_file[str(root / "images" / "b.json")]
    assert (bad_shapes.field, bad_shapes.message) == ("shapes", "expected a list, got int")
    bad_image = by_file[str(root / "images" / "c.jpg")]
    assert bad_image.code == "bad-image" and bad_image.message.startswith("not an image")
    with pytest.raises(AnnotationError) as info:  # the message itself is unchanged
        lm.read_labelme(root / "images" / "b.json")
    assert str(info.value) == f"failed to load '{root / 'images' / 'b.json'}': shapes: expected a list, got int"
