"""`datatool prelabel` and `datatool label`: detector boxes into labelme JSONs on a real photo,
existing JSONs untouched, and the real labelme started on a prelabelled dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from datatool.capture import capture
from datatool.core.provenance import session_of
from datatool.cli import cli
from datatool.formats.labelme import read_labelme
from datatool.label import labelme_command, prelabel, start_labelme
from tests.conftest import write_image, write_labelme_json
from tests.test_detect import ASTRONAUT_FACE


@pytest.fixture
def photo_dataset(tmp_path) -> Path:
    """images/: the astronaut photo (captured, so session-stamped), a noise image, and a
    hand-labelled image whose JSON must never change."""
    from PIL import Image
    from skimage import data

    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(data.astronaut()).save(src / "a_astronaut.png")
    write_image(src / "b_noise.png", 120, 90, seed=3)
    root = tmp_path / "ds"
    capture(root, source=str(src), count=0, progress=False)
    human = write_image(root / "images" / "human.jpg", 64, 48, seed=4)
    write_labelme_json(human, [[1, 2, 30, 40]], width=64, height=48)
    return root


def _images(root: Path) -> dict[str, Path]:
    """'astronaut' / 'noise' / 'human' -> image path (captured names are session_NNNN.jpg)."""
    files = sorted((root / "images").glob("*.jpg"))
    captured = [p for p in files if p.name != "human.jpg"]
    return {"astronaut": captured[0], "noise": captured[1], "human": root / "images" / "human.jpg"}


def test_prelabel_boxes_the_face_and_keeps_the_session(photo_dataset):
    imgs = _images(photo_dataset)
    human_json = imgs["human"].with_suffix(".json")
    before = (human_json.read_bytes(), human_json.stat().st_mtime_ns)

    result = prelabel(photo_dataset, detector="haar", progress=False)

    sample = read_labelme(imgs["astronaut"].with_suffix(".json"))
    (box,) = sample.boxes
    assert box.label == "face" and box.iou(ASTRONAUT_FACE) >= 0.5
    assert (sample.width, sample.height) == (512, 512)
    assert sample.attributes["session"] == session_of(imgs["astronaut"])
    assert box.attributes["description"].startswith("prelabel haar")
    # nothing found in noise: left unlabeled (no JSON), not declared a negative
    assert not imgs["noise"].with_suffix(".json").exists()
    assert result.no_face == [imgs["noise"]]
    # human work untouched, byte for byte
    assert (human_json.read_bytes(), human_json.stat().st_mtime_ns) == before
    assert result.existing == 1
    assert result.histogram_line() == "0 boxes: 1 image, 1 box: 1 image"


def test_prelabel_twice_changes_nothing(photo_dataset):
    prelabel(photo_dataset, detector="haar", progress=False)
    snapshot = {p: p.read_bytes() for p in (photo_dataset / "images").glob("*.json")}
    again = prelabel(photo_dataset, detector="haar", progress=False)
    assert again.written == {} and again.existing == 2
    assert {p: p.read_bytes() for p in (photo_dataset / "images").glob("*.json")} == snapshot


def test_prelabel_write_empty_makes_negatives(photo_dataset):
    imgs = _images(photo_dataset)
    result = prelabel(photo_dataset, detector="haar", write_empty=True, progress=False)
    negative = read_labelme(imgs["noise"].with_suffix(".json"))
    assert negative.boxes == () and negative.is_negative
    assert result.histogram() == {0: 1, 1: 1}


@pytest.mark.parametrize("labels,expected_label", [
    ("face", "face"),
    ("head,face", "head"),  # detected boxes take the first label
    (" visage , face", "visage"),  # spaces around labels are trimmed
])
def test_prelabel_uses_the_first_label(photo_dataset, labels, expected_label):
    prelabel(photo_dataset, detector="haar", labels=labels, progress=False)
    sample = read_labelme(_images(photo_dataset)["astronaut"].with_suffix(".json"))
    assert [b.label for b in sample.boxes] == [expected_label]


def test_prelabel_min_score_drops_weak_boxes(photo_dataset):
    result = prelabel(photo_dataset, detector="haar", min_score=1e9, progress=False)
    assert result.written == {} and len(result.no_face) == 2


def test_prelabel_reports_a_corrupt_image_and_goes_on(photo_dataset):
    (photo_dataset / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    result = prelabel(photo_dataset, detector="haar", progress=False)
    assert [Path(i.file).name for i in result.issues] == ["broken.jpg"]
    assert len(result.written) == 1


def test_prelabel_cli_prints_the_histogram(photo_dataset):
    result = CliRunner().invoke(cli, ["prelabel", str(photo_dataset), "--detector", "haar"])
    assert result.exit_code == 0, result.output
    assert "Boxes per image: 0 boxes: 1 image, 1 box: 1 image" in result.output
    assert "1 already had a JSON (untouched)" in result.output


def test_prelabel_cli_unknown_detector(photo_dataset):
    result = CliRunner().invoke(cli, ["prelabel", str(photo_dataset), "--detector", "yolo"])
    assert result.exit_code == 1 and "unknown detector 'yolo'" in result.output
    assert not list((photo_dataset / "images").glob("a*.json"))


def test_prelabel_ctrl_c_keeps_finished_jsons(photo_dataset):
    from datatool.core.detect import HaarDetector

    class InterruptedOnSecondImage(HaarDetector):
        calls = 0

        def detect(self, rgb):
            InterruptedOnSecondImage.calls += 1
            if InterruptedOnSecondImage.calls == 2:
                raise KeyboardInterrupt  # Ctrl-C while the noise image is being detected
            return super().detect(rgb)

    result = prelabel(photo_dataset, detector=InterruptedOnSecondImage(), write_empty=True, progress=False)
    assert result.interrupted
    written = sorted(p.name for p in (photo_dataset / "images").glob("*.json"))
    assert written == sorted(["human.json", _images(photo_dataset)["astronaut"].with_suffix(".json").name])
    assert not list((photo_dataset / "images").glob(".facekit-tmp*"))


def test_prelabel_with_a_trained_run(photo_dataset, tmp_path):
    # a run whose model always answers "a face at the centre half": the box lands in the JSON
    from tests.test_detect import _write_run

    run = _write_run(tmp_path / "run", presence=0.95, box=(0.25, 0.25, 0.75, 0.75))
    result = CliRunner().invoke(cli, ["prelabel", str(photo_dataset), "--detector", str(run)])
    assert result.exit_code == 0, result.output
    assert "Boxes per image: 1 box: 2 images" in result.output
    sample = read_labelme(_images(photo_dataset)["astronaut"].with_suffix(".json"))
    assert sample.boxes[0].xyxy == pytest.approx((128, 128, 384, 384), abs=0.01)
    assert sample.boxes[0].attributes["description"] == "prelabel run:run 0.95"


# ---------------------------------------------------------------- label: the labelme command

def test_label_dry_run_prints_the_exact_command_and_writes_nothing(photo_dataset):
    result = CliRunner().invoke(cli, ["label", str(photo_dataset), "--labels", "face,person",
                                      "--detector", "haar", "--dry-run"])
    assert result.exit_code == 0, result.output
    images = str(photo_dataset / "images")
    assert result.output.strip().splitlines()[-1].endswith(f"{images} --labels face,person --output {images}")
    assert "would first run: datatool prelabel" in result.output
    assert len(list((photo_dataset / "images").glob("*.json"))) == 1  # only the human one


@pytest.mark.parametrize("layout", ["dataset", "bare"])  # DATASET/images or a bare folder of images
def test_labelme_command_targets_the_images_folder(tmp_path, layout):
    root = tmp_path / "ds"
    images = root / "images" if layout == "dataset" else root
    write_image(images / "x.jpg")
    cmd = labelme_command(root, labels=["face"], program=["labelme"])
    assert cmd == ["labelme", str(images), "--labels", "face", "--output", str(images)]


def test_label_without_display_says_what_still_works(photo_dataset):
    # tests run with QT_QPA_PLATFORM=offscreen: no display for a GUI
    result = CliRunner().invoke(cli, ["label", str(photo_dataset)])
    assert result.exit_code == 1
    assert "no display" in result.output and "--dry-run" in result.output and "prelabel" in result.output
    assert "Traceback" not in result.output


def test_label_without_labelme_says_what_to_install(photo_dataset, monkeypatch):
    import datatool.label as label_mod

    monkeypatch.setattr(label_mod, "labelme_available", lambda: False)  # as if not installed
    result = CliRunner().invoke(cli, ["label", str(photo_dataset), "--detector", "haar"])
    assert result.exit_code == 1
    assert "pip install labelme==6.3.1" in result.output and "--dry-run" in result.output
    assert len(list((photo_dataset / "images").glob("*.json"))) == 1  # failed before prelabelling


# Runs the real labelme main with the command line `start_labelme` builds, and prints the
# shapes labelme loaded for each file, so the test can see the prelabelled JSON in the GUI.
SPY = r'''
import json
import sys
import labelme.app
from labelme.__main__ import main

real_load_shapes = labelme.app.MainWindow._load_shapes

def spy(self, shapes, replace=True):
    real_load_shapes(self, shapes, replace=replace)
    loaded = [[s.label, [[p.x(), p.y()] for p in s.points]] for s in shapes]
    sys.__stdout__.write("FACEKIT-SHAPES " + json.dumps(loaded) + "\n")
    sys.__stdout__.flush()

labelme.app.MainWindow._load_shapes = spy
sys.argv[0] = "labelme"
main()
'''


@pytest.mark.slow
def test_real_labelme_opens_the_prelabelled_dataset(photo_dataset, tmp_path):
    for p in (photo_dataset / "images").glob("human.*"):
        p.unlink()  # labelme opens the first image: make it the astronaut
    prelabel(photo_dataset, detector="haar", progress=False)
    astronaut_json = _images(photo_dataset)["astronaut"].with_suffix(".json")
    before = astronaut_json.read_bytes()
    expected = read_labelme(astronaut_json).boxes[0]

    spy = tmp_path / "spy_labelme.py"
    spy.write_text(SPY)
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": str(home)}
    proc = start_labelme(photo_dataset, labels=["face"], require_display=False, env=env,
                         program=[sys.executable, str(spy)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    err: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(line.startswith("FACEKIT-SHAPES") for line in lines):
            assert proc.poll() is None, "labelme exited early:\n" + "".join(err[-30:])
            time.sleep(0.2)
        shapes = [line for line in lines if line.startswith("FACEKIT-SHAPES")]
        assert shapes, "labelme did not load a file within 60 s:\n" + "".join(err[-30:])
        loaded = json.loads(shapes[0].split(" ", 1)[1])
        assert [label for label, _ in loaded] == ["face"]
        (x0, y0), (x1, y1) = loaded[0][1]
        assert (x0, y0, x1, y1) == pytest.approx(expected.xyxy)
        time.sleep(1.0)
        assert proc.poll() is None, "labelme did not stay up"
        assert any("Loaded file" in line and astronaut_json.stem in line for line in err)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert astronaut_json.read_bytes() == before  # opening does not rewrite the JSON
    assert (home / ".labelmerc").exists()  # labelme's config went to the temporary HOME
