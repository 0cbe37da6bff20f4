"""Face detectors: Haar and mtcnn on a real photo, a trained run through the model contract, and
the one run detector that prelabel and predict share."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from datatool.core.detect import Detection, HaarDetector, get_detector
from datatool.core.errors import DatatoolError
from datatool.core.sample import Box
from trainer.detector import RunDetector

# Eileen Collins in skimage.data.astronaut() (512x512), measured by eye on a 4x enlarged crop
# with a 10-pixel grid: cheek to cheek x 180..268, hairline to chin y 78..180.
ASTRONAUT_FACE = Box(180, 78, 268, 180)


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="module")
def mtcnn_detector():
    return get_detector("mtcnn")


def test_haar_finds_the_astronauts_face(astronaut):
    dets = get_detector("haar").detect(astronaut)
    assert len(dets) == 1
    assert dets[0].box.iou(ASTRONAUT_FACE) >= 0.5
    assert dets[0].score > 0


def test_mtcnn_finds_the_astronauts_face(astronaut, mtcnn_detector):
    dets = mtcnn_detector.detect(astronaut)
    assert len(dets) == 1
    assert dets[0].box.iou(ASTRONAUT_FACE) >= 0.5
    assert 0.9 <= dets[0].score <= 1.0


@pytest.mark.parametrize("name", ["haar", "mtcnn"])
@pytest.mark.parametrize("shape", [
    (48, 64),  # small noise image: nothing to find
    (8, 8),  # smaller than any detector window
])
def test_detectors_find_nothing_in_noise(name, shape, mtcnn_detector):
    rgb = np.random.default_rng(0).integers(0, 90, size=(*shape, 3), dtype=np.uint8)
    det = mtcnn_detector if name == "mtcnn" else HaarDetector()
    assert det.detect(rgb) == []


def test_detector_boxes_are_clipped_to_the_image(astronaut):
    # the face cut by the left edge: whatever is found must lie inside the image
    crop = np.ascontiguousarray(astronaut[40:220, 210:400])
    for d in get_detector("haar").detect(crop):
        assert d.box.is_inside(crop.shape[1], crop.shape[0])


@pytest.mark.parametrize("bad", [
    np.zeros((10, 10), np.uint8),  # grayscale
    np.zeros((10, 10, 3), np.float32),  # floats
    np.zeros((10, 10, 4), np.uint8),  # RGBA
])
def test_detect_rejects_non_rgb_arrays(bad):
    with pytest.raises(ValueError, match="RGB uint8"):
        HaarDetector().detect(bad)


@pytest.mark.parametrize("spec,message", [
    ("nope", "choose one of haar, mtcnn"),  # unknown name lists the choices
    ("runs/does-not-exist", "trainer fit"),  # a missing run folder says what a run is
])
def test_unknown_detector_is_a_clear_error(spec, message):
    with pytest.raises(DatatoolError, match=message):
        get_detector(spec)


@pytest.mark.parametrize("spec", ["haar", "HAAR", " haar "])  # case and spaces do not matter
def test_builtin_names_are_forgiving(spec):
    assert get_detector(spec).name == "haar"


# ---------------------------------------------------------------- a trained run (the model contract)

def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _write_run(folder, *, presence: float, box=(0.25, 0.25, 0.75, 0.75), outputs="dict",
               config=None, size=32):
    """A tiny detection run: constant `presence` and `box` outputs (zero kernels, chosen biases)."""
    import keras

    inp = keras.Input((size, size, 3))
    feat = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inp))
    p = keras.layers.Dense(1, activation="sigmoid", name="presence", kernel_initializer="zeros",
                           bias_initializer=keras.initializers.Constant(_logit(presence)))(feat)
    b = keras.layers.Dense(4, activation="sigmoid", name="box", kernel_initializer="zeros",
                           bias_initializer=keras.initializers.Constant([_logit(v) for v in box]))(feat)
    model = keras.Model(inp, {"presence": p, "box": b} if outputs == "dict" else [p, b])
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    cfg = {"image_size": size, "task": "detection"} if config is None else config
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


@pytest.mark.parametrize("outputs", ["dict", "list"])  # both ways a Keras model can name its outputs
def test_run_detector_maps_normalized_box_to_pixels(tmp_path, outputs):
    run = _write_run(tmp_path / "run", presence=0.9, box=(0.25, 0.25, 0.75, 0.5), outputs=outputs)
    det = get_detector(str(run))
    assert isinstance(det, RunDetector) and det.input_hw == (32, 32)
    rgb = np.zeros((80, 100, 3), np.uint8)  # any size: resized to the model's 32x32 input
    (found,) = det.detect(rgb)
    assert found.box.xyxy == pytest.approx((25, 20, 75, 40), abs=0.01)
    assert found.score == pytest.approx(0.9, abs=1e-4)


def test_run_detector_reports_no_face_below_presence_threshold(tmp_path):
    run = _write_run(tmp_path / "run", presence=0.2)
    assert get_detector(str(run)).detect(np.zeros((40, 40, 3), np.uint8)) == []


def test_run_detector_accepts_the_model_file_itself(tmp_path):
    run = _write_run(tmp_path / "run", presence=0.9)
    assert get_detector(str(run / "model.keras")).run == run


@pytest.mark.parametrize("config,message", [
    ({"image_size": 32, "task": "identity"}, "not a face detector"),  # a recognizer is no detector
    ({"image_size": "big", "task": "detection"}, "image_size"),  # names the field
    ({"image_size": 32, "presence_threshold": 2}, "presence_threshold"),
])
def test_run_detector_config_errors_name_the_field(tmp_path, config, message):
    run = _write_run(tmp_path / "run", presence=0.9, config=config)
    with pytest.raises(DatatoolError, match=message) as e:
        get_detector(str(run))
    assert "config.json" in str(e.value)


def test_run_folder_without_model_is_a_clear_error(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(DatatoolError, match="no model.keras"):
        get_detector(str(tmp_path / "run"))


def test_corrupt_model_file_is_a_clear_error(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(b"not a zip")
    with pytest.raises(DatatoolError, match="cannot load the Keras model"):
        get_detector(str(run))


def _write_dense_run(folder, *, scores, boxes, size=32):
    """A run whose model outputs the dense contract: `scores` (K,) and `boxes` (K, 4), constant."""
    import keras

    inp = keras.Input((size, size, 3))
    feat = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(0.0)(inp))
    s = keras.layers.Dense(len(scores), activation="sigmoid", name="scores", kernel_initializer="zeros",
                           bias_initializer=keras.initializers.Constant([_logit(v) for v in scores]))(feat)
    flat = keras.layers.Dense(4 * len(boxes), activation="sigmoid", kernel_initializer="zeros",
                              bias_initializer=keras.initializers.Constant([_logit(v) for b in boxes for v in b]))(feat)
    b = keras.layers.Reshape((len(boxes), 4), name="boxes")(flat)
    model = keras.Model(inp, {"scores": s, "boxes": b})
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    (folder / "config.json").write_text(json.dumps({"image_size": size, "task": "detection"}))
    return folder


def test_run_detector_returns_every_face_at_or_above_the_threshold(tmp_path):
    # a model that proposes three faces: the one below the threshold is dropped, the others come best first
    run = _write_dense_run(tmp_path / "run", scores=[0.6, 0.3, 0.9],
                           boxes=[(0.1, 0.1, 0.3, 0.3), (0.4, 0.4, 0.6, 0.6), (0.5, 0.2, 0.9, 0.7)])
    found = get_detector(str(run)).detect(np.zeros((100, 200, 3), np.uint8))
    assert [round(d.score, 3) for d in found] == [0.9, 0.6]
    assert found[0].box.xyxy == pytest.approx((100, 20, 180, 70), abs=0.01)
    assert found[1].box.xyxy == pytest.approx((20, 10, 60, 30), abs=0.01)


def test_prelabel_and_predict_give_the_same_box_for_one_run_on_one_image(tmp_path):
    from click.testing import CliRunner

    from conftest import write_image
    from datatool.cli import cli as datatool_cli
    from datatool.formats.labelme import read_labelme
    from trainer.cli import cli as trainer_cli

    # a model whose box moves with every pixel of its input (a random linear map of the image)
    import keras

    inp = keras.Input((32, 32, 3))
    flat = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inp))
    box = keras.layers.Dense(4, activation="sigmoid", name="box",
                             kernel_initializer=keras.initializers.RandomNormal(stddev=0.05, seed=0))(flat)
    presence = keras.layers.Dense(1, activation="sigmoid", name="presence", kernel_initializer="zeros",
                                  bias_initializer=keras.initializers.Constant(_logit(0.9)))(flat)
    run = tmp_path / "run"
    run.mkdir()
    keras.Model(inp, {"presence": presence, "box": box}).save(run / "model.keras")
    (run / "config.json").write_text(json.dumps({"task": "detection", "image_size": 32}))
    # not square and much larger than the input: the resize decides what the model sees
    image = write_image(tmp_path / "ds" / "images" / "photo.jpg", 157, 93, seed=4, box=(40, 20, 90, 70))

    labelled = CliRunner().invoke(datatool_cli, ["prelabel", str(tmp_path / "ds"), "--detector", str(run)])
    assert labelled.exit_code == 0, labelled.output
    (prelabelled,) = read_labelme(image.with_suffix(".json")).boxes
    predicted = CliRunner().invoke(trainer_cli, ["predict", str(run), str(image), "--out", str(tmp_path / "pred"),
                                                 "--threshold", "0"])
    assert predicted.exit_code == 0, predicted.output
    (row,) = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert prelabelled.width > 0
    assert (row["x_min"], row["y_min"], row["x_max"], row["y_max"]) == pytest.approx(prelabelled.xyxy, abs=0.006)


def test_detection_is_frozen():
    d = Detection(Box(0, 0, 1, 1), 0.5)
    with pytest.raises(AttributeError):
        d.score = 1.0  # type: ignore[misc]
