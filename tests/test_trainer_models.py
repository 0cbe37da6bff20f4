"""The trainer's input pipeline, model parts and backbone weights (no training here)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from datatool.core.errors import DatatoolError


def _records(tfdir, split):
    import tensorflow as tf

    from datatool.core.tfrecord import list_shards, parse_example

    return [parse_example(r) for r in tf.data.TFRecordDataset([str(p) for p in list_shards(tfdir, split)])]


def test_dataset_targets_are_presence_and_the_box_of_each_record(detection_tfrecords):
    from trainer.data import make_dataset

    ds = make_dataset(detection_tfrecords, "val", image_size=32, batch_size=64)
    images, targets = next(iter(ds))
    records = _records(detection_tfrecords, "val")
    assert images.shape == (len(records), 32, 32, 3) and images.dtype.name == "float32"
    assert 0 <= float(np.min(images)) and float(np.max(images)) <= 255
    for rec, presence, box in zip(records, targets["presence"].numpy(), targets["box"].numpy()):
        boxes = rec["boxes"].numpy()
        assert presence[0] == (1.0 if len(boxes) else 0.0)
        np.testing.assert_allclose(box, boxes[0] if len(boxes) else [-1, -1, -1, -1])


@pytest.mark.parametrize("boxes,expected", [
    ([[0, 0, .2, .2], [.3, .3, .9, .8], [.1, .1, .4, .4]], [.3, .3, .9, .8]),  # the largest of three
    ([[.5, .5, .6, .6]], [.5, .5, .6, .6]),                                   # the only one
    (np.zeros((0, 4)), [-1, -1, -1, -1]),                                     # negative: masked target
])
def test_detection_targets_pick_the_largest_box(boxes, expected):
    import tensorflow as tf

    from trainer.data import detection_targets

    presence, box = detection_targets(tf.constant(boxes, tf.float32, shape=(len(boxes), 4)))
    assert float(presence[0]) == (1.0 if len(boxes) else 0.0)
    np.testing.assert_allclose(box.numpy(), expected, atol=1e-6)


def test_shuffle_order_is_a_function_of_the_seed(detection_tfrecords):
    from trainer.data import make_dataset

    def first_boxes(seed):
        ds = make_dataset(detection_tfrecords, "train", image_size=32, batch_size=8, shuffle=True, seed=seed)
        return next(iter(ds))[1]["box"].numpy()

    a, b, c = first_boxes(1), first_boxes(1), first_boxes(2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_each_epoch_order_is_a_function_of_seed_and_epoch_alone(detection_tfrecords):
    """A resumed fit starts a new pipeline at epoch k: it must give what epoch k of a pipeline
    running since epoch 0 gave (issue 14 item 7)."""
    from trainer.data import epoch_variable, make_dataset

    def order(ds):
        return np.concatenate([t["box"].numpy() for _, t in ds])

    current = epoch_variable()
    running = make_dataset(detection_tfrecords, "train", image_size=32, batch_size=8, shuffle=True, seed=1,
                           epoch=current)
    epochs = []
    for epoch in range(3):
        current.assign(epoch)
        epochs.append(order(running))
    fresh = make_dataset(detection_tfrecords, "train", image_size=32, batch_size=8, shuffle=True, seed=1, epoch=2)
    np.testing.assert_array_equal(order(fresh), epochs[2])
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    # every epoch holds every record once
    assert sorted(map(tuple, epochs[0])) == sorted(map(tuple, epochs[1]))


def test_task_comes_from_dataset_json_else_from_a_record(detection_tfrecords, identity_tfrecords, tmp_path):
    from trainer.data import read_task

    assert read_task(detection_tfrecords) == "detection"
    assert read_task(identity_tfrecords) == "identity"
    bare = tmp_path / "bare"
    shutil.copytree(identity_tfrecords, bare)
    (bare / "dataset.json").unlink()
    assert read_task(bare) == "identity"  # peeked: image/class/label >= 0
    (bare / "dataset.json").write_text(json.dumps({"task": "pose"}))
    with pytest.raises(DatatoolError, match="dataset.json: task: unknown value 'pose'"):
        read_task(bare)


def test_missing_split_and_corrupt_shard_are_clear_errors(detection_tfrecords, tmp_path):
    from trainer.data import count_records, shards

    with pytest.raises(DatatoolError, match="no 'train' shards"):
        shards(tmp_path, "train")
    bad = tmp_path / "bad"
    bad.mkdir()
    src = sorted(detection_tfrecords.glob("val-*.tfrecord"))[0]
    (bad / src.name).write_bytes(src.read_bytes()[:-40])  # truncated mid-record
    with pytest.raises(DatatoolError, match="unreadable TFRecord"):
        count_records(bad, "val")


@pytest.mark.parametrize("backbone,module,size", [
    ("mobilenetv2", "mobilenet_v2", 64),  # x / 127.5 - 1
    ("vgg16", "vgg16", 32),               # RGB -> BGR, minus the ImageNet mean
])
def test_saved_model_preprocesses_like_keras_applications(backbone, module, size, tmp_path):
    import importlib

    import keras

    from trainer.models import build_detector, save_model

    model = build_detector(backbone=backbone, image_size=size, alpha=0.35, weights="none")
    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    expected = importlib.import_module(f"keras.applications.{module}").preprocess_input(x.copy())
    np.testing.assert_allclose(np.asarray(model.get_layer("preprocess")(x)), expected, atol=1e-4)
    # the contract survives a save/load without custom code: outputs named presence and box
    save_model(model, tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", compile=False)
    out = loaded(x, training=False)
    assert set(out) == {"presence", "box"}
    assert out["presence"].shape == (2, 1) and out["box"].shape == (2, 4)
    np.testing.assert_allclose(np.asarray(out["box"]), np.asarray(model(x, training=False)["box"]), atol=1e-5)


@pytest.mark.parametrize("layers,expected_trainable", [
    (0, 0),        # heads only: backbone frozen
    (3, None),     # the top 3 Keras layers (those with weights, BatchNorm excluded)
    ("all", None),
])
def test_set_trainable_unfreezes_from_the_top_and_keeps_batchnorm_frozen(layers, expected_trainable):
    import keras

    from trainer.models import build_detector, set_trainable

    model = build_detector(backbone="mobilenetv2", image_size=32, alpha=0.35, weights="none")
    n = set_trainable(model, layers)
    bb = model.get_layer("backbone")
    trainable = [layer for layer in bb.layers if layer.trainable and layer.weights]
    assert n == len(trainable)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in trainable)
    if expected_trainable == 0:
        assert n == 0 and not bb.trainable_weights
    elif layers == 3:
        top = [layer for layer in bb.layers[-3:] if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)]
        assert trainable == top
    else:
        assert n > 50
    assert model.get_layer("head").trainable_weights  # the head always trains


def test_imagenet_weights_that_cannot_download_stop_with_advice(detection_tfrecords, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from keras.src.backend import config as keras_config
    from trainer.cli import cli

    # an empty Keras cache and a proxy that refuses at once: the download fails fast, as offline
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path / "keras_home"))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["fit", str(detection_tfrecords), "--out", str(run), "--image-size", "96",
                                      "--alpha", "0.35", "--weights", "imagenet"])
    assert result.exit_code == 1, result.output
    assert "Error: --weights imagenet: cannot get ImageNet weights" in result.output
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5" in result.output
    assert "--weights PATH" in result.output and "--weights none" in result.output
    assert "Traceback" not in result.output
    assert not (run / "config.json").exists()  # nothing half-made to refuse later


@pytest.mark.parametrize("weights,message", [
    ("missing.weights.h5", "no such file"),
    ("not_weights.h5", "cannot load into mobilenetv2"),
])
def test_bad_local_weights_name_the_file(weights, message, tmp_path):
    from trainer.weights import build_backbone

    (tmp_path / "not_weights.h5").write_bytes(b"this is not HDF5")
    with pytest.raises(DatatoolError, match=message) as e:
        build_backbone("mobilenetv2", image_size=32, alpha=0.35, weights=str(tmp_path / weights))
    assert weights in str(e.value)


# --- the table of tasks ---------------------------------------------------------------------------


@pytest.mark.parametrize("task,head,expected", [
    (None, None, ("detection", "dense")),            # fit's default
    ("identity", None, ("identity", "softmax")),     # each task has its default head
    ("detection", "single", ("detection", "single")),
])
def test_tasks_are_looked_up_by_task_and_head(task, head, expected):
    from trainer import tasks

    entry = tasks.get(task, head)
    assert (entry.name, entry.head) == expected


@pytest.mark.parametrize("task,head,message", [
    ("identity", "single", "--head single: not a head for identity (the identity heads: softmax)"),
    ("pose", None, "--task: 'pose' is not one of detection, identity"),
])
def test_an_unknown_task_or_head_is_a_clear_error(task, head, message):
    from trainer import tasks

    with pytest.raises(DatatoolError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tasks.get(task, head)


@pytest.mark.parametrize("config,expected", [
    ({"task": "detection"}, ("detection", "single")),  # a run from before heads had names
    ({}, ("detection", "single")),                     # older still: no task either
    ({"task": "identity", "head": "softmax"}, ("identity", "softmax")),
])
def test_a_run_finds_its_entry_from_its_config(config, expected, tmp_path):
    from trainer import tasks

    entry = tasks.of_run(config, tmp_path)
    assert (entry.name, entry.head) == expected


def test_a_run_with_a_head_this_trainer_does_not_know_names_its_config(tmp_path):
    from trainer import tasks

    with pytest.raises(DatatoolError, match="config.json: head: 'cubic' is not a detection head"):
        tasks.of_run({"task": "detection", "head": "cubic"}, tmp_path)
