"""`trainer.feature_cache`: the frozen part computed once gives the same model, cut at a valid
boundary, stored in memory or on disk, and a disk cache is reused only for the same data and
backbone.

Tiny on purpose: MobileNetV2 alpha 0.35 at 32 px, its weights from a local file (so the
backbone has a frozen part, with BatchNorm in inference mode as with ImageNet weights).
"""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

SIZE = 32
ALPHA = 0.35
FIT_ARGS = ["--image-size", str(SIZE), "--alpha", str(ALPHA), "--batch-size", "16", "--seed", "0",
            "--patience", "10"]


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A local backbone weights file (random, seeded): `--weights PATH` freezes a backbone."""
    import keras

    from trainer.weights import build_backbone

    path = tmp_path_factory.mktemp("weights") / "backbone.weights.h5"
    keras.utils.set_random_seed(123)
    build_backbone("mobilenetv2", image_size=SIZE, alpha=ALPHA, weights="none").save_weights(str(path))
    return path


def _config(weights, **kw):
    from trainer.fit import FitConfig

    # the one-box head: one tensor crosses each cut (tests/test_dense.py covers the dense head's two)
    return FitConfig(image_size=SIZE, alpha=ALPHA, weights=str(weights), batch_size=16, **{"head": "single", **kw})


def _compiled_model(weights, fine_tune_layers, **kw):
    from trainer.fit import build_model, compile_for_phase

    config = _config(weights, fine_tune_layers=fine_tune_layers, **kw)
    model = build_model(config)
    compile_for_phase(model, config, fine_tune_layers=fine_tune_layers, lr=1e-2)
    return model


# --- where the backbone is cut -------------------------------------------------------------------

@pytest.fixture(scope="module")
def backbones():
    from trainer.weights import build_backbone

    return {name: build_backbone(name, image_size=SIZE, alpha=ALPHA, weights="none")
            for name in ("mobilenetv2", "vgg16")}


@pytest.mark.parametrize("backbone,layers,boundary,top_layers", [
    ("mobilenetv2", 0, "out_relu", 0),                  # heads only: the backbone's output
    ("mobilenetv2", 3, "block_16_project_BN", 3),       # block 16 has no residual: cut where asked
    ("mobilenetv2", 10, "block_16_expand", 10),         # the default: block 16 and Conv_1
    ("mobilenetv2", 12, "block_14_add", 20),            # inside block 15's residual: down to its input
    ("mobilenetv2", 20, "block_14_add", 20),            # exactly at a block boundary
    ("vgg16", 4, "block4_pool", 4),                     # a chain: every layer is a boundary
    ("vgg16", 0, "block5_pool", 0),                     # heads only
])
def test_boundary_is_the_nearest_layer_at_or_below_the_top_n_whose_output_alone_feeds_the_rest(
        backbones, backbone, layers, boundary, top_layers):
    from trainer.feature_cache import find_boundary

    bb = backbones[backbone]
    found = find_boundary(bb, layers)
    assert (found.layer, found.top_layers, found.requested) == (boundary, top_layers, layers)
    assert found.shape == tuple(bb.get_layer(boundary).output.shape[1:])
    assert bb.layers[found.cut - 1].name == boundary


@pytest.mark.parametrize("layers", [
    153,   # every layer of MobileNetV2 but its input
    1000,  # more layers than the backbone has
])
def test_nothing_left_frozen_means_no_boundary(backbones, layers):
    from trainer.feature_cache import find_boundary

    assert find_boundary(backbones["mobilenetv2"], layers) is None


# --- one step: same update ----------------------------------------------------------------------

@pytest.mark.parametrize("layers", [
    0,   # heads only
    12,  # fine-tuning the top 12, cached 20 layers down (8 frozen layers run in the cached model)
])
def test_one_training_step_gives_the_same_weight_update_with_and_without_the_cache(weights_file, layers):
    from trainer.feature_cache import compile_like, find_boundary, split_model

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, SIZE, SIZE, 3)).astype("float32")
    presence = np.array([[1], [0], [1], [1], [0], [1], [1], [1]], "float32")
    box = np.where(presence > 0, np.sort(rng.uniform(0, 1, (8, 4)), axis=1), -1.0).astype("float32")
    targets = {"presence": presence, "box": box}

    # built with the same seed, so the head's dropout draws the same mask in both
    plain = _compiled_model(weights_file, layers)
    start = [w.copy() for w in plain.get_weights()]
    plain_logs = plain.train_on_batch(images, targets, return_dict=True)

    cached = _compiled_model(weights_file, layers)
    np.testing.assert_array_equal(np.concatenate([w.ravel() for w in cached.get_weights()]),
                                  np.concatenate([w.ravel() for w in start]))
    split = split_model(cached, find_boundary(cached.get_layer("backbone"), layers))
    compile_like(split.cached_model, cached)
    features = split.extractor.predict_on_batch(images)
    cached_logs = split.cached_model.train_on_batch(features, targets, return_dict=True)

    assert cached_logs["loss"] == pytest.approx(plain_logs["loss"], rel=1e-5)
    moved = 0
    for before, a, b in zip(start, plain.get_weights(), cached.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
        moved += int(not np.array_equal(a, before))
    # the head's 8 arrays, plus the unfrozen convolutions of the top 12 (BatchNorm stays frozen)
    assert moved == {0: 8, 12: 12}[layers]


# --- whole fits through the CLI -----------------------------------------------------------------

@pytest.fixture(scope="module")
def two_fits(detection_tfrecords, weights_file, tmp_path_factory):
    """The same fit (heads 2 epochs, then top 12 layers 1 epoch) with the cache on disk and
    without it: `{True: (run, output), False: (run, output)}`."""
    from trainer.cli import cli

    base = tmp_path_factory.mktemp("feature_cache_fits")
    out = {}
    for cache in (True, False):
        run = base / f"cache_{cache}"
        flags = ["--feature-cache-ram", "0"] if cache else ["--no-feature-cache"]
        result = CliRunner().invoke(cli, ["fit", str(detection_tfrecords), "--out", str(run), *FIT_ARGS,
                                          "--head", "single", "--weights", str(weights_file), "--epochs", "2",
                                          "--fine-tune-layers", "12", "--fine-tune-epochs", "1", *flags])
        assert result.exit_code == 0, result.output + repr(result.exception)
        out[cache] = (run, result.output)
    return out


def _history(run):
    with open(run / "history.csv") as f:
        return list(csv.DictReader(f))


def test_cached_and_uncached_fits_follow_the_same_path(two_fits):
    cached, plain = _history(two_fits[True][0]), _history(two_fits[False][0])
    assert [r["epoch"] for r in cached] == [r["epoch"] for r in plain] == ["0", "1", "2"]
    assert set(cached[0]) == set(plain[0])  # same metrics, same names
    # same batches in the same order every epoch and the same updates: the same numbers
    for c, p in zip(cached, plain):
        for key in ("loss", "val_loss", "val_presence_accuracy", "val_box_iou", "box_iou"):
            assert float(c[key]) == pytest.approx(float(p[key]), rel=1e-3, abs=1e-4), (key, c, p)
    # and it learned something on the way (the loss went down)
    assert float(cached[-1]["loss"]) < float(cached[0]["loss"])


def test_saved_model_takes_raw_images_and_is_the_uncached_model(two_fits):
    import keras

    cached = keras.models.load_model(two_fits[True][0] / "model.keras", compile=False)
    plain = keras.models.load_model(two_fits[False][0] / "model.keras", compile=False)
    def architecture(model):  # layer names and weight shapes, the input layers' counter-names aside
        return [(layer.name, [tuple(w.shape) for w in layer.weights]) for layer in model.get_layer("backbone").layers[1:]]

    assert architecture(cached) == architecture(plain)
    assert cached.get_layer("head").get_config() == plain.get_layer("head").get_config()
    assert tuple(cached.input_shape) == (None, SIZE, SIZE, 3)
    images = np.random.default_rng(1).integers(0, 256, (6, SIZE, SIZE, 3), dtype=np.uint8)
    got, want = cached.predict(images, verbose=0), plain.predict(images, verbose=0)
    assert got["presence"].shape == (6, 1) and got["box"].shape == (6, 4)
    np.testing.assert_allclose(got["presence"], want["presence"], atol=1e-4)
    np.testing.assert_allclose(got["box"], want["box"], atol=1e-4)
    for a, b in zip(cached.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_fit_says_where_it_cut_and_records_each_phase(two_fits, detection_tfrecords):
    from trainer.data import count_records

    run, output = two_fits[True]
    assert "caching the backbone's output (out_relu)" in output
    assert "caching the output of 'block_14_add'" in output and "nearest layer at or below the top 12" in output
    entries = json.loads((run / "config.json").read_text())["feature_cache"]
    assert [(e["phase"], e["boundary"], e["mode"], e["reused"]) for e in entries] == [
        ("heads", "out_relu", "disk", False), ("fine_tune", "block_14_add", "disk", False)]
    n = count_records(detection_tfrecords, "train") + count_records(detection_tfrecords, "val")
    assert all(e["images"] == n for e in entries)  # train + val records
    kept = [p for p in (run / "feature_cache").iterdir()]
    assert sorted(p.name for p in kept) == sorted(e["key"][:16] for e in entries)

    plain_run, plain_output = two_fits[False]
    assert "feature cache off" in plain_output
    assert "feature_cache" not in json.loads((plain_run / "config.json").read_text())
    assert not (plain_run / "feature_cache").exists()


# --- disk reuse ----------------------------------------------------------------------------------

def _rewrite_reversed(shard):
    """Same records, other order: other content, same count."""
    import tensorflow as tf

    records = [r.numpy() for r in tf.data.TFRecordDataset(str(shard))]
    with tf.io.TFRecordWriter(str(shard)) as w:
        for r in reversed(records):
            w.write(r)


def test_disk_cache_is_reused_only_when_data_and_backbone_match(detection_tfrecords, weights_file, tmp_path):
    import keras

    from trainer.fit import fit
    from trainer.weights import build_backbone

    tfdir = tmp_path / "tf"
    shutil.copytree(detection_tfrecords, tfdir)
    other_weights = tmp_path / "other.weights.h5"
    keras.utils.set_random_seed(7)
    build_backbone("mobilenetv2", image_size=SIZE, alpha=ALPHA, weights="none").save_weights(str(other_weights))
    run = tmp_path / "run"

    def reused(weights):
        logs = []
        config = _config(weights, epochs=1, fine_tune_layers=3, fine_tune_epochs=0, feature_cache_ram=0.0)
        record = fit(tfdir, run, config=config, overwrite=True, verbose=0, log=logs.append)
        (entry,) = record["feature_cache"]
        assert entry["mode"] == "disk"
        assert any("reusing" in line for line in logs) == entry["reused"]
        return entry["reused"]

    assert reused(weights_file) is False           # first time: computed
    assert reused(weights_file) is True            # same records, same backbone
    _rewrite_reversed(sorted(tfdir.glob("train-*.tfrecord"))[0])
    assert reused(weights_file) is False           # a changed TFRecord
    assert reused(other_weights) is False          # other backbone weights
    # the stale cache of this phase was replaced, not kept beside the new one
    assert len([p for p in (run / "feature_cache").iterdir()]) == 1


# --- storage decisions, interruptions, damage -----------------------------------------------------

class _Pipelines:
    """`pipelines` for `FeatureCache` over TFDIR, optionally raising KeyboardInterrupt after some batches."""

    def __init__(self, tfdir, *, stop_after=None):
        self.tfdir, self.stop_after, self.calls = tfdir, stop_after, 0

    def __call__(self, split):
        from trainer.data import make_dataset

        def make():
            self.calls += 1
            ds = make_dataset(self.tfdir, split, image_size=SIZE, batch_size=16)
            if self.stop_after is None:
                return ds

            def interrupted():
                for k, batch in enumerate(ds):
                    if k == self.stop_after:
                        raise KeyboardInterrupt
                    yield batch
            return interrupted()
        return make


def _cache(run, tfdir, **kw):
    from trainer.data import count_records
    from trainer.feature_cache import FeatureCache

    pipes = kw.pop("pipes", None) or _Pipelines(tfdir)
    counts = {s: count_records(tfdir, s) for s in ("train", "val")}
    return FeatureCache(run, pipelines={s: pipes(s) for s in counts}, counts=counts,
                        fingerprint={"records": "test"}, batch_size=16, log=lambda *a: None, progress=False, **kw)


@pytest.fixture(scope="module")
def heads_model(weights_file):
    return _compiled_model(weights_file, 0)


def test_memory_under_the_budget_disk_over_it_and_a_damaged_disk_cache_is_recomputed(
        detection_tfrecords, heads_model, tmp_path):
    from trainer.data import count_records

    memory = _cache(tmp_path / "m", detection_tfrecords, ram_fraction=1.0).prepare(
        heads_model, phase="heads", fine_tune_layers=0)
    assert memory.info["mode"] == "memory" and not (tmp_path / "m" / "feature_cache").exists()
    disk = _cache(tmp_path, detection_tfrecords, ram_fraction=0.0).prepare(heads_model, phase="heads",
                                                                           fine_tune_layers=0)
    assert disk.info["mode"] == "disk"
    features = tmp_path / "feature_cache" / disk.info["key"][:16] / "train.features.npy"
    assert features.is_file()
    # both hold the same activations and targets, batch for batch
    for (fa, ta), (fb, tb) in zip(memory.train, disk.train):
        np.testing.assert_array_equal(fa.numpy(), fb.numpy())
        np.testing.assert_array_equal(ta["box"].numpy(), tb["box"].numpy())

    features.write_bytes(features.read_bytes()[:200])  # cut short
    logs = []
    pipes = _Pipelines(detection_tfrecords)
    cache = _cache(tmp_path, detection_tfrecords, ram_fraction=0.0, pipes=pipes)
    cache.log = logs.append
    again = cache.prepare(heads_model, phase="heads", fine_tune_layers=0)
    assert again.info["reused"] is False and pipes.calls == 2  # train and val recomputed
    assert any("unusable" in line for line in logs)
    assert len(np.load(features, mmap_mode="r")) == count_records(detection_tfrecords, "train")


@pytest.mark.parametrize("seed", [0, 3])
def test_cached_batches_come_in_the_order_of_the_shuffled_record_pipeline(detection_tfrecords, seed):
    from trainer.data import epoch_variable, make_dataset
    from trainer.feature_cache import CachedSplit, shuffled_order

    stored = list(make_dataset(detection_tfrecords, "train", image_size=SIZE, batch_size=16))  # as cached
    boxes = np.concatenate([t["box"].numpy() for _, t in stored])
    rows = np.arange(len(boxes), dtype=np.float32)[:, None]  # "activations": the row number
    current = epoch_variable()  # what trainer.fit sets as each epoch begins
    cached = CachedSplit(features=rows, targets={"box": boxes}).dataset(
        batch_size=16, order=shuffled_order(len(boxes), seed=seed, epoch=current))
    records = make_dataset(detection_tfrecords, "train", image_size=SIZE, batch_size=16, shuffle=True, seed=seed,
                           epoch=current)
    orders = []
    for epoch in range(2):
        current.assign(epoch)
        got = [(f.numpy(), t["box"].numpy()) for f, t in cached]
        want = np.concatenate([t["box"].numpy() for _, t in records])
        assert [len(b) for _, b in got] == [16] * (len(boxes) // 16) + ([len(boxes) % 16] if len(boxes) % 16 else [])
        np.testing.assert_array_equal(np.concatenate([b for _, b in got]), want)
        # activations travel with their own targets
        index = np.concatenate([f for f, _ in got])[:, 0].astype(int)
        np.testing.assert_array_equal(boxes[index], want)
        orders.append(index)
    assert not np.array_equal(orders[0], orders[1])  # reshuffled every epoch


def test_nothing_frozen_is_said_and_skipped(detection_tfrecords, heads_model, tmp_path):
    logs = []
    cache = _cache(tmp_path, detection_tfrecords)
    cache.log = logs.append
    assert cache.prepare(heads_model, phase="train", fine_tune_layers="all") is None
    assert cache.prepare(heads_model, phase="fine_tune", fine_tune_layers=153) is None
    assert "every backbone layer trains, nothing is frozen" in logs[0]
    assert "leaves nothing frozen" in logs[1]
    assert cache.entries == []


def test_an_interrupted_feature_pass_leaves_no_cache_behind(detection_tfrecords, heads_model, tmp_path):
    pipes = _Pipelines(detection_tfrecords, stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        _cache(tmp_path, detection_tfrecords, ram_fraction=0.0, pipes=pipes).prepare(
            heads_model, phase="heads", fine_tune_layers=0)
    assert pipes.calls == 1
    assert list((tmp_path / "feature_cache").iterdir()) == []
