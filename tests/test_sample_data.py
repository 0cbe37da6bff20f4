"""The bundled sample data (`datasets/sample/`) and the script that makes it (`scripts/make_sample.py`).

The WIDER file is parsed here with a few lines of our own on purpose: these tests check the
committed data, not facekit's WIDER reader.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "datasets" / "sample"
WIDER_KEYS = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
# WIDER FACE attribute ranges: blur/occlusion 0-2, the others 0-1
WIDER_MAX = {"blur": 2, "expression": 1, "illumination": 1, "invalid": 1, "occlusion": 2, "pose": 1}


@pytest.fixture(scope="module")
def ms():
    """scripts/make_sample.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("make_sample", REPO / "scripts" / "make_sample.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["make_sample"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def fresh(ms, tmp_path_factory) -> Path:
    """The sample generated anew into a temporary folder."""
    out = tmp_path_factory.mktemp("sample") / "a"
    ms.make_sample(out)
    return out


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((SAMPLE / "manifest.json").read_text(encoding="utf-8"))


def parse_wider(text: str) -> list[tuple[str, list[list[int]]]]:
    """Minimal strict WIDER gt parser: [(file, [[x, y, w, h, blur, ..., pose], ...]), ...]."""
    lines = text.splitlines()
    out, i = [], 0
    while i < len(lines):
        name, count = lines[i], int(lines[i + 1])
        rows = [[int(v) for v in line.split()] for line in lines[i + 2:i + 2 + max(count, 1)]]
        assert all(len(r) == 10 for r in rows), f"{name}: every face row has 10 integers"
        if count == 0:
            # WIDER: a 0-face image still has one all-zero row
            assert rows == [[0] * 10], f"{name}: a 0-face image needs one all-zero row"
            rows = []
        out.append((name, rows))
        i += 2 + max(count, 1)
    return out


def _files(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("faces, expected", [
    # one face: x y w h then the six attributes
    ([{"box": [10, 20, 40, 60], "attributes": dict(blur=1, expression=0, illumination=0, invalid=0,
                                                   occlusion=0, pose=0)}],
     "0--Sample/a.jpg\n1\n10 20 30 40 1 0 0 0 0 0\n"),
    # a negative: count 0 and still one all-zero row
    ([], "0--Sample/a.jpg\n0\n0 0 0 0 0 0 0 0 0 0\n"),
    # two faces, attribute order blur expression illumination invalid occlusion pose
    ([{"box": [0, 0, 5, 6], "attributes": dict(blur=2, expression=1, illumination=0, invalid=0,
                                               occlusion=1, pose=0)},
      {"box": [7, 8, 9, 10], "attributes": dict(blur=0, expression=0, illumination=1, invalid=0,
                                                occlusion=0, pose=1)}],
     "0--Sample/a.jpg\n2\n0 0 5 6 2 1 0 0 1 0\n7 8 2 2 0 0 1 0 0 1\n"),
])
def test_wider_text_writes_the_wider_layout(ms, faces, expected):
    assert ms.wider_text([{"name": "a.jpg", "faces": faces}], "0--Sample") == expected


def test_generator_is_byte_deterministic(ms, fresh, tmp_path):
    again = tmp_path / "b"
    ms.make_sample(again)
    a, b = _files(fresh), _files(again)
    assert a.keys() == b.keys()
    differing = [k for k in a if a[k].read_bytes() != b[k].read_bytes()]
    assert differing == []


def test_committed_sample_is_what_the_script_makes(fresh):
    from datatool.formats.labelme import read_labelme
    from datatool.core.images import load_rgb

    made, committed = _files(fresh), _files(SAMPLE)
    committed.pop("README.md", None)
    assert made.keys() == committed.keys()
    for rel in ("manifest.json", "wider/wider_face_sample_bbx_gt.txt"):
        assert made[rel].read_text() == committed[rel].read_text(), rel
    for rel, path in made.items():
        if rel.endswith(".jpg"):
            # pixels, not bytes: another libjpeg build may round differently
            diff = np.abs(load_rgb(path).astype(int) - load_rgb(committed[rel]).astype(int))
            assert diff.mean() < 1.0, rel
        elif rel.endswith(".json") and rel.startswith("heldout/"):
            assert [b.xyxy for b in read_labelme(path).boxes] == [b.xyxy for b in read_labelme(committed[rel]).boxes]


def test_committed_wider_file_parses_and_boxes_lie_inside(manifest):
    from datatool.core.images import image_size

    entries = parse_wider((SAMPLE / "wider" / "wider_face_sample_bbx_gt.txt").read_text())
    assert len(entries) == len(manifest["wider"]["records"]) >= 30
    counts = [len(rows) for _, rows in entries]
    assert 0 in counts and 2 in counts and counts.count(0) <= len(counts) // 3
    for (name, rows), rec in zip(entries, manifest["wider"]["records"]):
        w, h = image_size(SAMPLE / "wider" / "images" / name)
        assert name.endswith(rec["name"]) and (w, h) == (rec["width"], rec["height"])
        assert [[x, y, x + bw, y + bh] for x, y, bw, bh, *_ in rows] == [f["box"] for f in rec["faces"]]
        for x, y, bw, bh, *attrs in rows:
            assert bw > 0 and bh > 0 and x >= 0 and y >= 0 and x + bw <= w and y + bh <= h, name
            assert all(0 <= v <= WIDER_MAX[k] for k, v in zip(WIDER_KEYS, attrs)), name


def test_heldout_faces_never_appear_in_training(manifest):
    train_used = {f["crop"] for r in manifest["wider"]["records"] for f in r["faces"]}
    heldout_used = {f["crop"] for r in manifest["heldout"]["records"] for f in r["faces"]}
    part = manifest["partition"]
    assert not set(part["train"]) & set(part["heldout"])
    assert heldout_used and heldout_used <= set(part["heldout"])
    assert train_used <= set(part["train"])
    assert not train_used & heldout_used
    # the identity crops come from the training side too
    assert not {p["crop"] for p in manifest["people"].values()} & set(part["heldout"])
    # a face is used once per set: no duplicate crops inside the training images
    faces = [f["crop"] for r in manifest["wider"]["records"] for f in r["faces"] if f["crop"] != "astronaut"]
    assert len(faces) == len(set(faces))


def test_heldout_is_a_labelme_dataset_matching_the_manifest(manifest):
    from datatool.dataset import load_dataset

    ds = load_dataset(SAMPLE / "heldout")
    assert not [i for i in ds.issues if i.severity == "error"]
    by_name = {Path(s.image_path).name: s for s in ds.samples}
    recs = manifest["heldout"]["records"]
    assert sorted(by_name) == sorted(r["name"] for r in recs)
    for r in recs:
        s = by_name[r["name"]]
        assert s.labeled and (s.width, s.height) == (r["width"], r["height"])
        assert [list(b.xyxy) for b in s.boxes] == [[float(v) for v in f["box"]] for f in r["faces"]]
    assert any(not s.boxes for s in ds.samples)  # negatives included


def test_lfw_boxes_sit_on_the_pasted_face(manifest):
    """An LFW face keeps one skin chroma (Cr, Cb) over its whole tile, so the middle of a true
    box is flat in chroma; a box shifted off its face would cover background instead."""
    import cv2

    from datatool.core.images import load_rgb

    for r in manifest["wider"]["records"]:
        faces = [f for f in r["faces"] if f["crop"].startswith("lfw_face:")]
        if not faces:
            continue
        ycc = cv2.cvtColor(load_rgb(SAMPLE / "wider" / "images" / "0--Sample" / r["name"]), cv2.COLOR_RGB2YCrCb)
        for f in faces:
            x0, y0, x1, y1 = f["box"]
            mx, my = (x1 - x0) // 4, (y1 - y0) // 4
            inner = ycc[y0 + my:y1 - my, x0 + mx:x1 - mx, 1:].reshape(-1, 2).astype(float)
            assert inner.std(axis=0).max() < 6, (r["name"], f["crop"])


def test_haar_finds_the_astronaut_where_her_box_is(manifest):
    import cv2

    from datatool.core.images import load_rgb

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    recs = [r for r in manifest["wider"]["records"] if any(f["crop"] == "astronaut" for f in r["faces"])]
    assert recs
    for r in recs:
        grey = cv2.cvtColor(load_rgb(SAMPLE / "wider" / "images" / "0--Sample" / r["name"]), cv2.COLOR_RGB2GRAY)
        box = next(f["box"] for f in r["faces"] if f["crop"] == "astronaut")
        dets = cascade.detectMultiScale(grey, 1.1, 4, minSize=(24, 24))
        assert any(_iou((x, y, x + w, y + h), box) >= 0.5 for x, y, w, h in dets), r["name"]


def _iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_video_stands_in_for_a_webcam(ms, tmp_path):
    import cv2

    clip = tmp_path / "webcam.avi"
    rows = ms.make_video(clip)
    cap = cv2.VideoCapture(str(clip))
    assert cap.isOpened()
    assert (cap.get(cv2.CAP_PROP_FPS), cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) \
        == (10.0, 320.0, 240.0)
    cap.release()
    assert ms.read_boxes_csv(ms.boxes_csv_for(clip)) == rows
    assert len(rows) == 90 and rows[-1]["box"] is None  # the face leaves at the end
    # what `capture --interval 0.5` keeps at 10 fps: every 5th frame
    rate = ms.haar_rate(clip, rows, every=5)
    assert rate["frames_face_fully_visible"] >= 15
    assert rate["haar_found"] >= 0.8 * rate["frames_face_fully_visible"]


def test_video_refuses_to_replace_an_existing_clip(ms, tmp_path):
    from datatool.core.errors import OutputExistsError

    clip = tmp_path / "webcam.avi"
    clip.write_bytes(b"mine")
    with pytest.raises(OutputExistsError, match="webcam.avi"):
        ms.make_video(clip)
    assert clip.read_bytes() == b"mine"


def test_rerun_needs_overwrite_and_removes_only_its_own_stale_files(ms, fresh, tmp_path):
    import shutil

    from datatool.core.errors import OutputExistsError

    out = tmp_path / "s"
    shutil.copytree(fresh, out)
    with pytest.raises(OutputExistsError):
        ms.make_sample(out)
    # a file an older run made (listed in its manifest) and a file the user put there
    m = json.loads((out / "manifest.json").read_text())
    m["wider"]["records"].append({"name": "sample_999.jpg"})
    (out / "manifest.json").write_text(json.dumps(m))
    stale = out / "wider" / "images" / "0--Sample" / "sample_999.jpg"
    stale.write_bytes(b"old")
    users = out / "wider" / "images" / "0--Sample" / "notes.txt"
    users.write_text("keep me")
    ms.make_sample(out, overwrite=True)
    assert not stale.exists() and users.read_text() == "keep me"


def test_committed_sample_is_small():
    total = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert total < 1.5 * 2**20


def test_facekit_wider_reader_reads_the_sample_if_present(manifest):
    wider = pytest.importorskip("datatool.formats.wider")
    read_wider = getattr(wider, "read_wider", None)
    if read_wider is None:
        pytest.skip("datatool.formats.wider has no read_wider")
    issues = []
    samples = read_wider(SAMPLE / "wider" / "wider_face_sample_bbx_gt.txt", SAMPLE / "wider" / "images",
                         issues=issues)
    assert issues == []
    assert [[list(b.xyxy) for b in s.boxes] for s in samples] == \
        [[[float(v) for v in f["box"]] for f in r["faces"]] for r in manifest["wider"]["records"]]
