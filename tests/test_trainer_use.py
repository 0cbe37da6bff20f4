"""`trainer evaluate`, `predict` and `export` through their CLI, on the shared trained run."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from trainer.cli import cli


def _invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_evaluate_writes_metrics_and_pr_curve(trained_run, detection_tfrecords, tmp_path):
    out = tmp_path / "report"
    result = _invoke("evaluate", trained_run, detection_tfrecords, "--split", "test", "--out", out)
    m = json.loads((out / "metrics.json").read_text())
    assert m["split"] == "test" and m["images"] > 0
    assert m["presence"]["tp"] + m["presence"]["fp"] + m["presence"]["fn"] + m["presence"]["tn"] == m["images"]
    assert 0 <= m["ap50_95"] <= m["ap50"] <= 1  # AP over stricter IoUs cannot be higher
    assert m["localization"]["iou_threshold"] == 0.5 and m["localization"]["faces"] == m["images_with_faces"]
    assert "note" not in m  # one face per image here: no one-box caveat
    assert (out / "pr_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert "AP@0.5" in result.output and "AUC" in result.output
    assert not (trained_run / "pr_curve.png").exists()  # --out, not RUN


def test_evaluate_says_a_one_box_model_caps_recall_on_multi_face_data(trained_run, tmp_path):
    from trainer.evaluate import compute_metrics

    # two images: one with two faces (the model finds the larger), one with one
    pred = {"scores": np.array([0.9, 0.8]), "pred": np.array([[0, 0, .5, .5], [.1, .1, .3, .3]]),
            "gt": [np.array([[0, 0, .5, .5], [.6, .6, .7, .7]]), np.array([[.1, .1, .3, .3]])],
            "sizes": np.array([[100, 100], [100, 100]], float), "ids": ["a", "b"]}
    m = compute_metrics(pred)
    assert "one-box model" in m["note"] and "0.667" in m["note"]  # 2 of 3 faces reachable
    assert m["localization"]["face_recall"] == pytest.approx(2 / 3)
    assert m["ap50"] == pytest.approx((67 * 1.0) / 101, abs=1e-6)  # recall stops at 2/3


def test_predict_annotates_images_folders_and_videos(trained_run, tmp_path):
    import cv2

    from conftest import write_image

    folder = tmp_path / "in"
    for k in range(3):
        write_image(folder / "sub" / f"p{k}.jpg", 80, 60, seed=k, box=(10, 10, 40, 40))
    single = write_image(tmp_path / "one.png", 50, 70, seed=9, box=(5, 20, 30, 45))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for k in range(4):
        writer.write(np.full((48, 64, 3), 40 * k, np.uint8))
    writer.release()
    out = tmp_path / "pred"
    result = _invoke("predict", trained_run, folder, single, video, "--out", out, "--threshold", "0.0")
    assert "8 images/frames" in result.output  # 3 + 1 images + 4 frames; the broken file is reported
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert len(rows) == 8 and rows == [{k: ("" if v is None else str(v)) for k, v in r.items()}
                                       for r in json.loads((out / "predictions.json").read_text())]
    for r in rows:
        assert 0 <= float(r["x_min"]) <= float(r["x_max"]) <= int(r["width"])
        assert 0 <= float(r["y_min"]) <= float(r["y_max"]) <= int(r["height"])
    assert [r["frame"] for r in rows if r["source"] == str(video)] == ["0", "1", "2", "3"]
    annotated = sorted(p.relative_to(out).as_posix() for p in (out / "annotated").rglob("*.jpg"))
    assert annotated == ["annotated/in/sub/p0.jpg", "annotated/in/sub/p1.jpg", "annotated/in/sub/p2.jpg",
                         "annotated/one.jpg"]
    # threshold 0: every image counts as a face, so each copy has a box drawn on it
    from datatool.core.images import load_rgb

    assert not np.array_equal(load_rgb(out / "annotated" / "one.jpg")[:, :, 1], load_rgb(single)[:, :, 1])
    cap = cv2.VideoCapture(str(out / "clip.annotated.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    cap.release()
    assert "broken.jpg" in (out / "problems.txt").read_text()
    # a second run into the same folder is refused
    again = CliRunner().invoke(cli, ["predict", str(trained_run), str(single), "--out", str(out)])
    assert again.exit_code == 1 and "--overwrite" in again.output


@pytest.mark.parametrize("args,message", [
    (["--source", "0"], "no display"),                 # QT_QPA_PLATFORM=offscreen in tests
    ([], "nothing to predict"),
    (["missing.jpg"], "missing.jpg: no such file"),
])
def test_predict_errors_are_one_clear_line(trained_run, args, message):
    result = CliRunner().invoke(cli, ["predict", str(trained_run), *args])
    assert result.exit_code != 0 and message in result.output, result.output
    assert "Traceback" not in result.output


def test_live_window_runs_on_a_video_source(trained_run, tmp_path, monkeypatch):
    import cv2

    from trainer import liveview

    video = tmp_path / "cam.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for k in range(5):
        writer.write(np.full((48, 64, 3), 30 * k, np.uint8))
    writer.release()
    shown = []
    monkeypatch.setattr(liveview, "display_available", lambda: True)  # offscreen Qt still draws
    real_open = liveview.open_window

    def recording_window(title):
        window = real_open(title)
        original = window.show
        window.show = lambda rgb, **kw: (shown.append(kw.get("corner")), original(rgb, **kw))
        return window

    monkeypatch.setattr(liveview, "open_window", recording_window)
    result = _invoke("predict", trained_run, "--source", video, "--max-frames", "3")
    assert "3 frames" in result.output
    assert len(shown) == 3 and all("FPS" in s for s in shown)


@pytest.mark.parametrize("quantize,tolerance", [
    (False, 1e-4),   # float TFLite: the same numbers as Keras
    (True, 0.08),    # int8 weights: close
])
def test_tflite_export_agrees_with_keras(trained_run, detection_tfrecords, tmp_path, quantize, tolerance):
    from trainer.data import make_dataset
    from trainer.export import run_tflite
    from trainer.models import load_run

    dest = tmp_path / ("int8.tflite" if quantize else "float.tflite")
    args = ["export", trained_run, "--format", "tflite", "--out", dest] + (["--quantize"] if quantize else [])
    _invoke(*args)
    images, _ = next(iter(make_dataset(detection_tfrecords, "test", image_size=64, batch_size=6)))
    model, _ = load_run(trained_run)
    want = model(images, training=False)
    got = run_tflite(dest, images.numpy())
    np.testing.assert_allclose(got["presence"], np.asarray(want["presence"]), atol=tolerance)
    np.testing.assert_allclose(got["box"], np.asarray(want["box"]), atol=tolerance)
    if quantize:
        float_size = (trained_run / "model.keras").stat().st_size
        assert dest.stat().st_size < float_size / 2


def test_saved_model_export_serves_the_same_outputs(trained_run, tmp_path):
    import tensorflow as tf

    from trainer.models import load_run

    dest = tmp_path / "sm"
    _invoke("export", trained_run, "--format", "saved_model", "--out", dest)
    served = tf.saved_model.load(str(dest))
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    got = served.serve(x)
    model, _ = load_run(trained_run)
    want = model(x, training=False)
    np.testing.assert_allclose(np.asarray(got["box"]), np.asarray(want["box"]), atol=1e-5)
    refused = CliRunner().invoke(cli, ["export", str(trained_run), "--format", "saved_model", "--out", str(dest)])
    assert refused.exit_code == 1 and "already exists" in refused.output
