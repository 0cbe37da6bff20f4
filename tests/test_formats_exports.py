"""COCO, Pascal VOC, YOLO and CSV: save-then-load round trips, each format's conventions at its
edge, and malformed files giving one error that names the file and the field or line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import write_image
from datatool.core.errors import AnnotationError, DatatoolError
from datatool.dataset import FORMATS
from datatool.formats import coco, csv, voc, yolo
from datatool.core.sample import Box, Sample

WIDER_ATTRS = {"blur": 1, "expression": 0, "illumination": 0, "invalid": 0, "occlusion": 2, "pose": 1}


def _samples(root: Path) -> list[Sample]:
    """Two labeled images (one in a sub-folder, two labels), a negative and an unlabeled image."""
    a = write_image(root / "a.jpg", 64, 48, seed=1)
    b = write_image(root / "event" / "b.png", 80, 60, seed=2)
    n = write_image(root / "neg.jpg", 32, 32, seed=3)
    u = write_image(root / "todo.jpg", 32, 32, seed=4)
    return [
        Sample(a, 64, 48, boxes=(Box(10, 8, 30, 32, attributes=WIDER_ATTRS),), image_id="a.jpg", group="ga"),
        Sample(b, 80, 60, boxes=(Box(0, 0, 80, 60, label="person"), Box(5, 6, 25, 36)), image_id="event/b.png"),
        Sample(n, 32, 32, image_id="neg.jpg"),
        Sample(u, 32, 32, image_id="todo.jpg", labeled=False),
    ]


# format, keeps box attributes, keeps group, keeps unlabeled images
ROUND_TRIPS = [
    ("labelme", True, True, True),  # the project's own format keeps everything
    ("wider", True, False, False),  # the six WIDER attributes only
    ("coco", True, True, False),  # attributes in annotations[i].attributes, group in images[i].facekit
    ("voc", True, False, False),  # attributes in <attributes>
    ("yolo", False, False, False),  # not written: YOLO trainers take an image without a txt as background
    ("csv", True, True, False),  # attributes as JSON in a column
]


@pytest.mark.parametrize("fmt,attrs,group,unlabeled", ROUND_TRIPS, ids=[r[0] for r in ROUND_TRIPS])
def test_save_then_load_equals(tmp_path, fmt, attrs, group, unlabeled):
    samples = _samples(tmp_path / "src")
    if fmt == "wider":  # one class only
        samples = [s.replace(boxes=tuple(Box(*b.xyxy, attributes=b.attributes) for b in s.boxes)) for s in samples]
    FORMATS[fmt].write(samples, tmp_path / "out")
    back = FORMATS[fmt].read(tmp_path / "out")
    expected = [s for s in samples if s.labeled or unlabeled]
    if fmt == "wider":  # every WIDER file line has an event folder: a.jpg comes back as 0--facekit/a.jpg
        expected = [s.replace(image_id=s.image_id if "/" in s.image_id else f"0--facekit/{s.image_id}")
                    for s in expected]
    assert [(s.image_id, s.width, s.height, s.labeled) for s in back] == \
        [(s.image_id, s.width, s.height, s.labeled) for s in expected]
    for got, want in zip(back, expected):
        assert got.image_path.read_bytes() == want.image_path.read_bytes()  # images copied as they were
        if fmt == "wider":  # WIDER has one class and writes all six attributes for every box
            assert [b.xyxy for b in got.boxes] == [b.xyxy for b in want.boxes]
            continue
        assert [b.label for b in got.boxes] == [b.label for b in want.boxes]
        assert [b.xyxy for b in got.boxes] == [pytest.approx(b.xyxy, abs=1e-3) for b in want.boxes]
        if attrs:
            assert [dict(b.attributes) for b in got.boxes] == [dict(b.attributes) for b in want.boxes]
        if group:
            assert got.group == want.group
    if fmt == "wider":
        assert dict(back[0].boxes[0].attributes) == WIDER_ATTRS


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_write_refuses_existing_output_without_overwrite(tmp_path, fmt):
    samples = [s.replace(boxes=tuple(Box(*b.xyxy) for b in s.boxes)) for s in _samples(tmp_path / "src")]
    FORMATS[fmt].write(samples, tmp_path / "out")
    before = {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    changed = [s.replace(boxes=()) for s in samples]
    with pytest.raises(DatatoolError, match="already exists"):
        FORMATS[fmt].write(changed, tmp_path / "out")
    assert {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()} == before
    FORMATS[fmt].write(changed, tmp_path / "out", overwrite=True)
    assert all(not s.boxes for s in FORMATS[fmt].read(tmp_path / "out") if s.labeled)


def test_coco_conventions(tmp_path):
    coco.write(_samples(tmp_path / "src"), tmp_path / "out")
    data = json.loads((tmp_path / "out" / "annotations.json").read_text())
    assert data["categories"] == [{"id": 1, "name": "face", "supercategory": "none"},
                                  {"id": 2, "name": "person", "supercategory": "none"}]  # 1-based ids
    assert [im["file_name"] for im in data["images"]] == ["a.jpg", "event/b.png", "neg.jpg"]
    first = data["annotations"][0]
    assert first["bbox"] == [10, 8, 20, 24] and first["area"] == 480  # [x, y, width, height]
    assert {a["image_id"] for a in data["annotations"]} == {1, 2}  # the negative has no annotation
    assert (tmp_path / "out" / "images" / "event" / "b.png").is_file()


def test_voc_is_one_based_inclusive_both_ways(tmp_path):
    s = Sample(write_image(tmp_path / "a.jpg", 64, 48), 64, 48, boxes=(Box(10, 8, 30, 32),), image_id="a.jpg")
    text = voc.dumps_voc(s)
    # pixels 10..29 (continuous 10..30) are VOC 11..30
    for tag, value in [("xmin", 11), ("ymin", 9), ("xmax", 30), ("ymax", 32)]:
        assert f"<{tag}>{value}</{tag}>" in text
    xml = tmp_path / "a.xml"
    xml.write_text(text)
    assert voc.read_voc_xml(xml, tmp_path).boxes[0].xyxy == (10, 8, 30, 32)


def test_voc_reads_a_labelimg_style_file(tmp_path):
    write_image(tmp_path / "JPEGImages" / "cat.jpg", 64, 48)
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "cat.xml").write_text(
        "<annotation><folder>images</folder><filename>cat.jpg</filename><path>C:\\x\\cat.jpg</path>"
        "<size><width>0</width><height>0</height><depth>3</depth></size>"  # some tools write 0: header wins
        "<object><name>face</name><difficult>1</difficult>"
        "<bndbox><xmin>31.0</xmin><ymin>9</ymin><xmax>12</xmax><ymax>60</ymax></bndbox></object></annotation>")
    issues = []
    (s,) = voc.read(tmp_path, issues=issues)
    assert (s.width, s.height, s.image_id) == (64, 48, "cat.jpg")
    assert s.boxes[0].xyxy == (11, 8, 31, 48) and s.boxes[0].attributes == {"difficult": 1}
    assert [i.code for i in issues] == ["corner-order", "box-out-of-bounds"]


def test_yolo_conventions(tmp_path):
    yolo.write(_samples(tmp_path / "src"), tmp_path / "out")
    out = tmp_path / "out"
    assert (out / "classes.txt").read_text() == "face\nperson\n"  # 0-based: line number = class id
    assert (out / "labels" / "a.txt").read_text() == "0 0.312500 0.416667 0.312500 0.500000\n"
    assert (out / "labels" / "event" / "b.txt").read_text().splitlines()[0] == "1 0.500000 0.500000 1.000000 1.000000"
    assert (out / "labels" / "neg.txt").read_text() == ""  # a negative has an empty txt
    assert not (out / "labels" / "todo.txt").exists()  # an unlabeled image has none
    import yaml

    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["names"] == {0: "face", 1: "person"} and data["nc"] == 2 and data["train"] == "images"


def test_wider_refuses_several_labels(tmp_path):
    from datatool.formats import wider

    with pytest.raises(DatatoolError, match="one class, but the boxes have labels face, person"):
        wider.write(_samples(tmp_path / "src"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_csv_has_one_row_per_box_and_a_row_per_negative(tmp_path):
    text = csv.dumps_csv(_samples(tmp_path / "src"))
    lines = text.splitlines()
    assert lines[0] == "image,width,height,label,x_min,y_min,x_max,y_max,group,attributes"
    assert len(lines) == 1 + 1 + 2 + 1  # header, a.jpg, b.png's two boxes, the negative
    assert lines[-1] == "neg.jpg,32,32,,,,,,,"


@pytest.mark.parametrize("data,field", [
    ({"images": "x"}, r"images: expected a list"),  # not a list
    ({"annotations": []}, r"images: expected a list \(missing\)"),  # no images at all
    ({"images": [{"id": 1}]}, r"images\[0\]: expected an object with 'id' and 'file_name'"),
    ({"images": [{"id": 1, "file_name": "../a.jpg", "width": 4, "height": 4}]}, r"images\[0\]\.file_name"),
    ({"images": [{"id": 1, "file_name": "a.jpg", "width": 4, "height": 4}], "categories": [{"id": 1, "name": "face"}],
      "annotations": [{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3]}]}, r"annotations\[0\]\.bbox"),
    ({"images": [{"id": 1, "file_name": "a.jpg", "width": 4, "height": 4}], "categories": [],
      "annotations": [{"image_id": 1, "category_id": 7, "bbox": [1, 2, 3, 3]}]}, r"annotations\[0\]\.category_id"),
    ({"images": [], "categories": [], "annotations": [{"image_id": [1], "bbox": [1, 2, 3, 3]}]},
     r"annotations\[0\]\.image_id"),  # unhashable id
])
def test_coco_malformed_names_file_and_field(tmp_path, data, field):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match=field) as info:
        coco.read(path, images=tmp_path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("xml,field", [
    ("<annotation><size><width>4", r"not valid XML \(line 1"),  # truncated
    ("<html></html>", r"not a VOC file"),  # some other XML
    ("<annotation><size><width>64</width><height>48</height></size><object><name>face</name>"
     "<bndbox><xmin>a</xmin><ymin>1</ymin><xmax>2</xmax><ymax>3</ymax></bndbox></object></annotation>",
     r"object\[0\]\.bndbox\.xmin: expected a number"),
    ("<annotation><size><width>64</width><height>48</height></size><object><name>face</name>"
     "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax></bndbox></object></annotation>",
     r"object\[0\]\.bndbox\.ymax: expected a number, got None"),  # a corner left out
    ("<annotation><size><width>64</width><height>48</height></size><object>"
     "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>3</ymax></bndbox></object></annotation>",
     r"object\[0\]\.name: missing"),
])
def test_voc_malformed_names_file_and_field(tmp_path, xml, field):
    (tmp_path / "Annotations").mkdir()
    path = tmp_path / "Annotations" / "a.xml"
    path.write_text(xml)
    with pytest.raises(AnnotationError, match=field) as info:
        voc.read(tmp_path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("line,message", [
    ("0 0.5 0.5 0.2", r"line 2: expected 'class cx cy w h'"),  # four values
    ("x 0.5 0.5 0.2 0.2", r"line 2: expected 'class cx cy w h'"),  # class not a number
    ("3 0.5 0.5 0.2 0.2", r"line 2: class 3 not in classes.txt"),  # unknown class
    ("0 0.5 0.5 -0.2 0.2", r"line 2: negative width/height"),
])
def test_yolo_malformed_names_file_and_line(tmp_path, line, message):
    write_image(tmp_path / "images" / "a.jpg", 64, 48)
    (tmp_path / "labels").mkdir()
    txt = tmp_path / "labels" / "a.txt"
    txt.write_text(f"0 0.5 0.5 0.1 0.1\n{line}\n")
    (tmp_path / "classes.txt").write_text("face\n")
    with pytest.raises(AnnotationError, match=message) as info:
        yolo.read(tmp_path)
    assert str(txt) in str(info.value)


@pytest.mark.parametrize("row,message", [
    ("a.jpg,64,48,face,1,2,x,4,,", r"line 2: x_max: expected a number, got 'x'"),
    ("a.jpg,0,48,face,1,2,3,4,,", r"line 2: width: expected positive integer"),
    ("a.jpg,64,48,,1,2,3,4,,", r"line 2: label: empty label"),
    ("a.jpg,64,48,face,1,2,3,4,,[1]", r"line 2: attributes: expected a JSON object"),
    ("/etc/a.jpg,64,48,face,1,2,3,4,,", r"line 2: image: .* not a relative path"),
])
def test_csv_malformed_names_file_and_line(tmp_path, row, message):
    path = tmp_path / "annotations.csv"
    path.write_text(",".join(csv.COLUMNS) + "\n" + row + "\n")
    with pytest.raises(AnnotationError, match=message) as info:
        csv.read(path)
    assert str(path) in str(info.value)


def test_csv_missing_column_is_reported(tmp_path):
    path = tmp_path / "annotations.csv"
    path.write_text("image,width,height\na.jpg,4,4\n")
    with pytest.raises(AnnotationError, match=r"line 1: missing column\(s\) label, x_min"):
        csv.read(path)


@pytest.mark.parametrize("fmt", ["coco", "csv"])
def test_one_file_formats_leave_out_a_broken_image_whole_when_collecting(tmp_path, fmt):
    samples = _samples(tmp_path / "src")
    FORMATS[fmt].write(samples, tmp_path / "out")
    if fmt == "coco":
        path = tmp_path / "out" / "annotations.json"
        data = json.loads(path.read_text())
        data["annotations"][1]["bbox"] = "oops"  # b.png's first box
        path.write_text(json.dumps(data))
    else:
        path = tmp_path / "out" / "annotations.csv"
        path.write_text(path.read_text().replace(",0,0,80,60,", ",0,zero,80,60,"))
    issues = []
    back = FORMATS[fmt].read(tmp_path / "out", issues=issues)
    # the image with a broken box is not kept with one face missing (that would teach "no face here")
    assert [s.image_id for s in back] == ["a.jpg", "neg.jpg"]
    assert [i.severity for i in issues] == ["error"]
