"""`trainer evaluate`, `predict` and `export` through their CLI, on the shared trained run."""

from __future__ import annotations

import csv
from pathlib import Path
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
    assert "note" not in m  # a dense model: no one-box caveat
    # faces of 12-31 px at a 64 px input are all small (under 32 x 32 input pixels)
    assert m["ap50_small"] == m["ap50"] and m["ap50_medium"] is None and m["ap50_large"] is None
    assert m["ap50"] > 0.5  # the dense head finds these faces after a short fit
    f = m["faces_found"]
    assert f["found"] + f["missed"] == m["faces"]
    assert (out / "pr_curve.png").read_bytes()[:4] == b"\x89PNG"
    if m["worst_images"]:
        assert (out / "worst.png").read_bytes()[:4] == b"\x89PNG" and "worst.png" in result.output
    assert "AP@0.5" in result.output and "AUC" in result.output and "small" in result.output
    assert not (trained_run / "pr_curve.png").exists()  # --out, not RUN


def _pred(dets, scores, gts, *, one_box):
    """`predict_split`'s output for hand-made images of 100 x 100 px (model input 100 px)."""
    from trainer.evaluate import _detections

    out = {"boxes": np.array(dets, float), "scores": np.array(scores, float)} if not one_box else \
        {"box": np.array([d[0] for d in dets], float), "presence": np.array([[s[0]] for s in scores], float)}
    boxes, det_scores = _detections(out)
    best = [int(np.argmax(s)) for s in det_scores]
    return {"scores": np.array([s[k] for s, k in zip(det_scores, best)]),
            "pred": np.array([d[k] for d, k in zip(boxes, best)]), "dets": boxes, "det_scores": det_scores,
            "gt": [np.array(g, float) for g in gts], "sizes": np.full((len(gts), 2), 100.0),
            "ids": [f"im{k}" for k in range(len(gts))], "image_size": 100, "one_box": one_box}


def test_evaluate_says_a_one_box_model_caps_recall_on_multi_face_data():
    from trainer.evaluate import compute_metrics

    # two images: one with two faces (the model finds the larger), one with one
    gts = [[[0, 0, .5, .5], [.6, .6, .7, .7]], [[.1, .1, .3, .3]]]
    m = compute_metrics(_pred([[[0, 0, .5, .5]], [[.1, .1, .3, .3]]], [[0.9], [0.8]], gts, one_box=True))
    assert "one-box model" in m["note"] and "0.667" in m["note"]  # 2 of 3 faces reachable
    assert m["localization"]["face_recall"] == pytest.approx(2 / 3)
    assert m["ap50"] == pytest.approx((67 * 1.0) / 101, abs=1e-6)  # recall stops at 2/3
    # the same faces found by a dense model, second face included: every face counts, no caveat
    dense = compute_metrics(_pred([[[0, 0, .5, .5], [.6, .6, .7, .7]], [[.1, .1, .3, .3], [0, 0, 0, 0]]],
                                  [[0.9, 0.7], [0.8, 0.0]], gts, one_box=False))
    assert "note" not in dense and dense["ap50"] == pytest.approx(1.0)
    assert dense["faces_found"] == {"threshold": 0.5, "iou_threshold": 0.5, "found": 3, "missed": 0,
                                    "false_alarms": 0, "recall": 1.0}
    # area ranges in input pixels: the 10 x 10 and 20 x 20 faces are small, the 50 x 50 one medium
    assert dense["ap50_small"] == pytest.approx(1.0) and dense["ap50_medium"] == pytest.approx(1.0)
    assert dense["ap50_large"] is None


def test_worst_images_are_those_with_misses_and_false_alarms():
    from trainer.evaluate import compute_metrics, worst_images

    gts = [[[.1, .1, .4, .4]], [[.1, .1, .4, .4], [.5, .5, .9, .9]], [[.2, .2, .6, .6]]]
    dets = [[[.1, .1, .4, .4], [0, 0, 0, 0]],            # right
            [[.1, .1, .4, .4], [0, 0, 0, 0]],            # one face missed
            [[.2, .2, .6, .6], [.7, .0, .95, .2]]]       # right, plus a false alarm
    m = compute_metrics(_pred(dets, [[.9, 0], [.9, 0], [.9, .8]], gts, one_box=False))
    assert [len(x["missed"]) for x in m["_matches"]] == [0, 1, 0]
    assert [len(x["false_alarms"]) for x in m["_matches"]] == [0, 0, 1]
    assert sorted(worst_images(m, _pred(dets, [[.9, 0], [.9, 0], [.9, .8]], gts, one_box=False))) == [1, 2]


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
    result = CliRunner().invoke(cli, ["predict", str(trained_run), str(folder), str(single), str(video), "--out",
                                      str(out), "--threshold", "0.0"])
    assert "8 images/frames" in result.output  # 3 + 1 images + 4 frames done, then the broken file named: exit 1
    assert result.exit_code == 1 and f"Error: {folder / 'broken.jpg'}: " in result.output  # reason: core.images'
    assert result.output.endswith(f"; 1 of 5 images could not be read and were skipped (listed in "
                                  f"{out / 'problems.txt'})\n"), result.output
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    full = json.loads((out / "predictions.json").read_text())
    # the CSV is the JSON without its per-face list
    assert len(rows) == 8 and rows == [{k: ("" if v is None else str(v)) for k, v in r.items() if k != "detections"}
                                       for r in full]
    for r, f in zip(rows, full):
        assert 0 <= float(r["x_min"]) <= float(r["x_max"]) <= int(r["width"])
        assert 0 <= float(r["y_min"]) <= float(r["y_max"]) <= int(r["height"])
        # every face at the threshold (0 here: every proposal), best first, the row's box the best one
        assert int(r["faces"]) == len(f["detections"]) >= 1
        assert [d["score"] for d in f["detections"]] == sorted((d["score"] for d in f["detections"]), reverse=True)
        assert f["detections"][0]["box"] == [f["x_min"], f["y_min"], f["x_max"], f["y_max"]]
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


@pytest.mark.parametrize("fmt,quantize,tolerance", [
    ("tflite", False, 1e-4),   # float TFLite: the same numbers as Keras
    ("tflite", True, 0.08),    # int8 weights: close
    ("onnx", False, 1e-4),     # ONNX (tf2onnx, onnxruntime): the same numbers
])
def test_dense_exports_agree_with_keras(trained_run, detection_tfrecords, tmp_path, fmt, quantize, tolerance):
    from trainer.data import make_dataset
    from trainer.dense import export_model
    from trainer.export import run_onnx, run_tflite
    from trainer.models import load_run

    dest = tmp_path / ("int8.tflite" if quantize else f"float.{fmt}")
    _invoke("export", trained_run, "--format", fmt, "--out", dest, *(["--quantize"] if quantize else []))
    assert json.loads(dest.with_suffix(".json").read_text())["postprocess"]["max_detections"] > 0
    images, _ = next(iter(make_dataset(detection_tfrecords, "test", image_size=64, batch_size=6)))
    model, _ = load_run(trained_run)
    runner = run_tflite if fmt == "tflite" else run_onnx
    # the exported network: per-cell scores and boxes, before NMS
    raw, want_raw = runner(dest, images.numpy(), raw=True), export_model(model)(images, training=False)
    np.testing.assert_allclose(raw["scores"], np.asarray(want_raw["scores"]), atol=tolerance)
    np.testing.assert_allclose(raw["boxes"], np.asarray(want_raw["boxes"]), atol=tolerance)
    # after the shared post-processing: the Keras model's faces
    got, want = runner(dest, images.numpy()), model(images, training=False)
    np.testing.assert_allclose(got["presence"], np.asarray(want["presence"]), atol=tolerance)
    if not quantize:  # int8 may reorder near-equal boxes
        np.testing.assert_allclose(got["boxes"], np.asarray(want["boxes"]), atol=1e-3)
        np.testing.assert_allclose(got["scores"], np.asarray(want["scores"]), atol=1e-3)
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
    for key in ("boxes", "scores", "presence", "box"):  # NMS included
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(want[key]), atol=1e-5)
    refused = CliRunner().invoke(cli, ["export", str(trained_run), "--format", "saved_model", "--out", str(dest)])
    assert refused.exit_code == 1 and "already exists" in refused.output


def test_a_one_box_run_from_before_heads_still_loads_predicts_evaluates_and_exports(single_run, detection_tfrecords,
                                                                                    tmp_path):
    from trainer.data import make_dataset
    from trainer.export import run_tflite
    from trainer.models import load_run

    assert "head" not in json.loads((single_run / "config.json").read_text())
    result = _invoke("evaluate", single_run, detection_tfrecords, "--out", tmp_path / "ev")
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["images"] > 0 and 0 <= m["ap50"] <= 1 and "AP@0.5" in result.output
    images = tmp_path / "in"
    from conftest import write_image

    write_image(images / "a.jpg", 80, 60, seed=1, box=(10, 10, 40, 40))
    _invoke("predict", single_run, images, "--out", tmp_path / "pred", "--threshold", "0")
    rows = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert len(rows) == 1 and rows[0]["faces"] == 1  # one box at most, and here one at threshold 0
    dest = tmp_path / "single.tflite"
    _invoke("export", single_run, "--format", "tflite", "--out", dest)
    assert not dest.with_suffix(".json").exists()  # the whole model: nothing to apply beside it
    batch, _ = next(iter(make_dataset(detection_tfrecords, "test", image_size=64, batch_size=4)))
    model, _ = load_run(single_run)
    np.testing.assert_allclose(run_tflite(dest, batch.numpy())["box"], np.asarray(model(batch)["box"]), atol=1e-4)


def test_dense_head_is_refused_for_identity_records(identity_tfrecords, tmp_path):
    result = CliRunner().invoke(cli, ["fit", str(identity_tfrecords), "--out", str(tmp_path / "run"),
                                      "--head", "dense", "--weights", "none"])
    assert result.exit_code == 1 and "--head dense: not a head for identity" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_predict_on_a_crowd_of_200_faces_and_on_a_1_pixel_face(trained_run, tmp_path):
    from PIL import Image

    from trainer.dense import MAX_DETECTIONS

    crowd = np.full((400, 800, 3), 30, np.uint8)
    for r in range(10):
        for c in range(20):
            crowd[r * 40 + 10:r * 40 + 30, c * 40 + 10:c * 40 + 30] = 230  # 200 bright squares
    tiny = np.full((64, 64, 3), 30, np.uint8)
    tiny[30, 30] = 255  # a 1-pixel "face"
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(crowd).save(folder / "crowd.png")
    Image.fromarray(tiny).save(folder / "tiny.png")
    _invoke("predict", trained_run, folder, "--out", tmp_path / "out", "--threshold", "0")
    rows = {Path(r["source"]).name: r for r in json.loads((tmp_path / "out" / "predictions.json").read_text())}
    assert set(rows) == {"crowd.png", "tiny.png"}
    assert 0 < rows["crowd.png"]["faces"] <= MAX_DETECTIONS
    for r in rows.values():  # every box inside its image
        for d in r["detections"]:
            x0, y0, x1, y1 = d["box"]
            assert 0 <= x0 < x1 <= r["width"] and 0 <= y0 < y1 <= r["height"]
