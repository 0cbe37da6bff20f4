"""`trainer fit`: it learns, it writes a reproducible run, it refuses to overwrite, it resumes."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from trainer.cli import cli


def _held_out(model, tfdir, size):
    from trainer.evaluate import compute_metrics, predict_split

    pred = predict_split(model, tfdir, "test", image_size=size)
    return pred, compute_metrics(pred)


def test_a_short_fit_beats_an_untrained_model_on_held_out_records(trained_run, detection_tfrecords):
    from trainer.fit import FitConfig, build_model
    from trainer.models import load_run

    model, config = load_run(trained_run)
    pred, trained = _held_out(model, detection_tfrecords, 64)
    untrained_model = build_model(FitConfig(**{**config["fit"], "seed": 1}))
    upred, untrained = _held_out(untrained_model, detection_tfrecords, 64)
    has_face = np.array([len(g) > 0 for g in pred["gt"]])
    iou_trained = _mean_iou(pred)
    iou_untrained = _mean_iou(upred)
    print(f"held-out mean IoU: trained {iou_trained:.3f}, untrained {iou_untrained:.3f}; "
          f"AUC {trained['presence']['auc']:.3f}")
    # the presence head separates faces from noise: ranks them (AUC) and scores them higher
    assert trained["presence"]["auc"] > 0.8
    assert untrained["presence"]["auc"] is not None
    assert pred["scores"][has_face].mean() > pred["scores"][~has_face].mean() + 0.05
    # boxes on held-out faces: better than an untrained model's by a margin (MobileNetV2 from
    # scratch on ~84 images learns boxes slowly; ImageNet weights are not reachable offline)
    assert iou_trained > max(2 * iou_untrained, iou_untrained + 0.08), (iou_trained, iou_untrained)
    assert trained["ap50"] >= untrained["ap50"]


def _mean_iou(pred):
    from trainer.metrics import iou_matrix

    ious = [iou_matrix(p[None], g).max() for p, g in zip(pred["pred"], pred["gt"]) if len(g)]
    return float(np.mean(ious))


def test_run_folder_holds_model_history_curves_and_a_reproducible_config(trained_run, detection_tfrecords):
    from trainer.data import record_hash

    names = {p.name for p in trained_run.iterdir()}
    assert {"model.keras", "best.weights.h5", "history.csv", "curves.png", "config.json", "logs"} <= names
    assert "checkpoint" not in names  # resumable state is removed once the fit is done
    config = json.loads((trained_run / "config.json").read_text())
    assert config["status"] == "done" and config["task"] == "detection" and config["head"] == "dense"
    assert config["backbone"] == "mobilenetv2" and config["image_size"] == 64 and config["alpha"] == 0.35
    assert config["fit"]["weights"] == "none" and config["fit"]["seed"] == 0
    assert [p["name"] for p in config["phases"]] == ["train"]  # weights none: everything trains at once
    assert config["data"]["record_sha256"] == record_hash(detection_tfrecords)
    assert config["labels"] == ["face"] and "tensorflow" in config["versions"]
    with open(trained_run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == list(range(config["results"]["epochs"]))
    assert {"loss", "val_loss", "iou", "val_cell_recall"} <= set(rows[0])  # the dense head's metrics
    assert (trained_run / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_fit_refuses_an_existing_run_without_overwrite(trained_run, detection_tfrecords):
    before = (trained_run / "model.keras").stat().st_mtime_ns
    result = CliRunner().invoke(cli, ["fit", str(detection_tfrecords), "--out", str(trained_run),
                                      "--weights", "none", "--image-size", "32", "--epochs", "1"])
    assert result.exit_code == 1
    assert "already exists" in result.output and "--overwrite" in result.output
    assert (trained_run / "model.keras").stat().st_mtime_ns == before


@pytest.mark.parametrize("args,message", [
    (["--weights", "none", "--epochs", "0"], "--epochs: must be at least 1"),
    (["--weights", "none", "--fine-tune-layers", "top"], "--fine-tune-layers: 'top' is not a number"),
    (["--weights", "none", "--task", "identity"], "holds detection records"),
    (["--weights", "none", "--head", "softmax"], "--head softmax: not a head for detection"),  # identity's head
])
def test_fit_rejects_bad_options_with_one_line(args, message, detection_tfrecords, tmp_path):
    result = CliRunner().invoke(cli, ["fit", str(detection_tfrecords), "--out", str(tmp_path / "r"), *args])
    assert result.exit_code != 0 and message in result.output, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "r").exists()  # refused before anything is written


def test_two_phases_from_local_weights_resume_after_an_interrupt(detection_tfrecords, tmp_path):
    """Phase 1 (heads) + phase 2 (top 3 layers), started from a local weights file, interrupted
    in the fine-tuning phase and continued with --resume."""
    import keras

    from trainer.fit import FitConfig, fit
    from trainer.weights import build_backbone

    weights = tmp_path / "backbone.weights.h5"
    keras.utils.set_random_seed(123)
    source = build_backbone("mobilenetv2", image_size=32, alpha=0.35, weights="none")
    source.save_weights(str(weights))

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 2:  # the first fine-tuning epoch
                raise KeyboardInterrupt

    run = tmp_path / "run"
    config = FitConfig(image_size=32, alpha=0.35, weights=str(weights), epochs=2, fine_tune_layers=3,
                       fine_tune_epochs=2, batch_size=32, patience=10)
    with pytest.raises(KeyboardInterrupt):
        fit(detection_tfrecords, run, config=config, verbose=0, extra_callbacks=[Interrupt()], log=lambda *a: None)
    assert not (run / "model.keras").exists()
    state = json.loads((run / "state.json").read_text())
    assert state["phases_done"] == 1 and state["last_epoch"] == 2

    result = CliRunner().invoke(cli, ["fit", str(detection_tfrecords), "--out", str(run), "--resume"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "resuming" in result.output
    with open(run / "history.csv") as f:
        epochs = [int(r["epoch"]) for r in csv.DictReader(f)]
    assert epochs == [0, 1, 2, 3]  # epoch 3 only was run after the restart, nothing twice
    config_json = json.loads((run / "config.json").read_text())
    assert [p["name"] for p in config_json["phases"]] == ["heads", "fine_tune"]
    assert config_json["results"]["phase_ends"] == [2, 4]
    # the bottom of the backbone was frozen in both phases: still exactly the local file's weights
    model = keras.models.load_model(run / "model.keras", compile=False)
    for name in ("Conv1", "expanded_conv_depthwise"):
        for got, want in zip(model.get_layer("backbone").get_layer(name).get_weights(),
                             source.get_layer(name).get_weights()):
            np.testing.assert_array_equal(got, want)
    # the fine-tuned top (the dense head's backbone stops at block_13_expand_relu) moved away
    top = model.get_layer("backbone").get_layer("block_13_expand").get_weights()[0]
    assert not np.array_equal(top, source.get_layer("block_13_expand").get_weights()[0])
    # and a finished run cannot be resumed again
    again = CliRunner().invoke(cli, ["fit", str(detection_tfrecords), "--out", str(run), "--resume"])
    assert again.exit_code == 1 and "already finished" in again.output


def test_a_fit_interrupted_in_epoch_2_and_resumed_ends_as_an_uninterrupted_one(detection_tfrecords, tmp_path):
    """Issue 14 item 7: Ctrl-C in the middle of epoch 2, then --resume. The one-box head has
    dropout (random state); early stopping and the learning-rate schedule keep counters (a short
    patience makes both act here); the optimizer keeps its moments; the data order changes every
    epoch: all must carry over. Tolerance: rtol 1e-4, for float32 kernels that may sum in another
    order; on CPU the two histories agree to every printed digit."""
    import keras

    from trainer.fit import FitConfig, fit, read_history

    # VGG16: 32 variables to trace an optimizer step for, against MobileNetV2's 260 (a third of the time)
    config = FitConfig(head="single", backbone="vgg16", weights="none", image_size=32, epochs=6, batch_size=16,
                       lr=3e-4, patience=2, seed=0)

    class CtrlC(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 2 and batch == 1:
                raise KeyboardInterrupt

    whole, run = tmp_path / "whole", tmp_path / "run"
    fit(detection_tfrecords, whole, config=config, verbose=0, log=lambda *a: None)
    with pytest.raises(KeyboardInterrupt):
        fit(detection_tfrecords, run, config=config, verbose=0, extra_callbacks=[CtrlC()], log=lambda *a: None)
    assert [int(h["epoch"]) for h in read_history(run)] == [0, 1]
    logs = []
    fit(detection_tfrecords, run, config=config, resume=True, verbose=0, log=logs.append)
    assert any("after epoch 2" in line for line in logs), logs

    want, got = read_history(whole), read_history(run)
    print("uninterrupted:", [(h["epoch"], round(h["val_loss"], 4), h["learning_rate"]) for h in want])
    assert [h["epoch"] for h in got] == [h["epoch"] for h in want]
    for key in ("loss", "val_loss", "presence_loss", "box_loss", "learning_rate"):
        np.testing.assert_allclose([h[key] for h in got], [h[key] for h in want], rtol=1e-4, err_msg=key)
    # the schedule or early stopping acted after the restart, so their state had to carry over
    assert len(want) < config.epochs or len({h["learning_rate"] for h in want[2:]}) > 1
    a = keras.models.load_model(whole / "model.keras", compile=False)
    b = keras.models.load_model(run / "model.keras", compile=False)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wb, wa, rtol=1e-4, atol=1e-6)
