"""`trainer.dense`: target assignment on hand-made boxes, decoding and NMS on hand-made score
maps, a loss blind to negatives' boxes, save / reload / export agreement, and a short fit from
scratch on generated discs that finds them.

Tiny on purpose: MobileNetV2 alpha 0.35, weights none, 64-96 px inputs.
"""

from __future__ import annotations

import numpy as np
import pytest

SIZE = 96  # px: stride-8 grid 12 x 12 (cells of 8 px), stride-16 grid 6 x 6 (16 px)


@pytest.fixture(scope="module")
def grid():
    from trainer.dense import DenseGrid

    return DenseGrid(image_size=SIZE, sizes=[(12, 12), (6, 6)])


def _encode(boxes_px, grid):
    from trainer.dense import encode_targets

    boxes = np.asarray(boxes_px, np.float32).reshape(-1, 4) / grid.image_size
    return encode_targets(boxes, grid).numpy()


def _cells(level, rows_cols, grid):
    """Flat cell indices of `(row, col)` pairs at `level`."""
    offset = sum(h * w for h, w in grid.sizes[:level])
    width = grid.sizes[level][1]
    return sorted(offset + r * width + c for r, c in rows_cols)


# --- targets --------------------------------------------------------------------------------------

@pytest.mark.parametrize("box,level,cells", [
    # 20 px face, centre (34, 34): stride 8, the 2 x 2 cells whose centres (28, 36) lie inside it
    ((24, 24, 44, 44), 0, [(3, 3), (3, 4), (4, 3), (4, 4)]),
    # 1 px face: no cell centre inside it, yet the cell holding its centre trains
    ((50, 10, 51, 11), 0, [(1, 6)]),
    # 80 px face (over 64 px): stride 16, cells within 1.5 cells (24 px) of its centre (48, 48)
    ((8, 8, 88, 88), 1, [(r, c) for r in range(1, 5) for c in range(1, 5)]),
    # the whole image: stride 16, centre sampling keeps the middle 4 x 4 cells of 6 x 6
    ((0, 0, 96, 96), 1, [(r, c) for r in range(1, 5) for c in range(1, 5)]),
    # a tall 20 x 70 face goes by its larger side (70 px): stride 16; one column of centres
    # (x 56) inside it, rows within 24 px of its centre (y 45)
    ((40, 10, 60, 80), 1, [(1, 3), (2, 3), (3, 3)]),
])
def test_a_box_trains_at_the_level_of_its_size_on_the_cells_near_its_centre(grid, box, level, cells):
    t = _encode([box], grid)
    assert t.shape == (grid.cells, 5)
    positive = np.flatnonzero(t[:, 0])
    assert positive.tolist() == _cells(level, cells, grid)
    np.testing.assert_allclose(t[positive, 1:], np.tile(np.asarray(box, np.float32) / SIZE, (len(positive), 1)),
                               atol=1e-6)
    assert not t[t[:, 0] == 0].any()  # negative cells: zero score target and zero box


def test_a_negative_image_has_no_positive_cell(grid):
    t = _encode(np.zeros((0, 4)), grid)
    assert t.shape == (grid.cells, 5) and not t.any()


def test_every_box_of_an_image_trains_and_a_shared_cell_goes_to_the_smaller_box(grid):
    boxes = [(24, 24, 44, 44),   # 20 px
             (30, 30, 46, 46),   # 16 px, overlapping the first: shares its cells
             (60, 60, 62, 62),   # 2 px
             (0, 40, 90, 96),    # 90 px: stride 16
             (70, 4, 90, 24)]    # 20 px in a corner
    t = _encode(boxes, grid)
    targets = t[t[:, 0] == 1, 1:]
    norm = np.asarray(boxes, np.float32) / SIZE
    for b in norm:  # each box is the target of at least one cell
        assert np.isclose(targets, b, atol=1e-6).all(axis=1).any(), b
    # cell (4, 4), centre (36, 36), holds both boxes' centres: the smaller (16 px) box wins it;
    # the 20 px box keeps (3, 3), whose centre (28, 28) lies outside the 16 px box
    (cell,) = _cells(0, [(4, 4)], grid)
    np.testing.assert_allclose(t[cell, 1:], norm[1], atol=1e-6)
    (corner,) = _cells(0, [(3, 3)], grid)
    np.testing.assert_allclose(t[corner, 1:], norm[0], atol=1e-6)


def test_targets_run_inside_a_tf_data_map_on_variable_numbers_of_boxes(grid):
    import tensorflow as tf

    from trainer.dense import encode_targets

    boxes = tf.ragged.constant([[[0.1, 0.1, 0.3, 0.3]], [], [[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.9, 0.9]]],
                               ragged_rank=1, dtype=tf.float32, inner_shape=(4,))
    ds = tf.data.Dataset.from_tensor_slices(boxes).map(lambda b: encode_targets(b, grid))
    positives = [int(t[:, 0].numpy().sum()) for t in ds]
    assert positives[1] == 0 and 0 < positives[0] < positives[2]


# --- decoding and NMS -----------------------------------------------------------------------------

def test_decoding_puts_each_cell_box_around_its_centre_by_exp_of_the_distances(grid):
    from trainer.dense import DenseDecode

    raw = np.zeros((1, grid.cells, 5), np.float32)
    raw[0, :, 0] = -3.0
    (cell,) = _cells(0, [(2, 5)], grid)           # centre (44, 20) px, cells of 8 px
    raw[0, cell] = [2.0, 0.0, np.log(2), np.log(0.5), np.log(3)]
    (big,) = _cells(1, [(5, 0)], grid)            # centre (8, 88) px, cells of 16 px
    raw[0, big] = [1.0, 0.0, 0.0, 0.0, 0.0]
    cells = np.asarray(DenseDecode(grid.to_config())(raw))
    np.testing.assert_allclose(cells[0, cell], [2.0, (44 - 8) / 96, (20 - 16) / 96, (44 + 4) / 96, (20 + 24) / 96],
                               atol=1e-6)
    np.testing.assert_allclose(cells[0, big], [1.0, (8 - 16) / 96, (88 - 16) / 96, (8 + 16) / 96, (88 + 16) / 96],
                               atol=1e-6)
    np.testing.assert_array_equal(cells[..., 0], raw[..., 0])  # the logit passes through


def _score_map():
    """Per-cell scores and boxes of 6 cells: two overlapping faces, one apart, one under the score
    threshold, two background."""
    boxes = np.array([[0.10, 0.10, 0.30, 0.30],   # 0.9: a face
                      [0.12, 0.11, 0.31, 0.32],   # 0.8: the same face from a neighbouring cell
                      [0.60, 0.60, 0.90, 0.95],   # 0.7: another face
                      [0.50, 0.00, 0.60, 0.10],   # 0.005: under the threshold
                      [0.00, 0.00, 0.00, 0.00],   # 0.0
                      [-0.2, 0.70, 0.20, 1.30]],  # 0.6: a face over the border: clipped
                     np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.005, 0.0, 0.6], np.float32)
    return scores[None], boxes[None]


def test_nms_keeps_the_best_of_overlapping_boxes_best_first_padded_to_k():
    from trainer.dense import postprocess

    scores, boxes = _score_map()
    out = postprocess(scores, boxes, max_detections=5, iou_threshold=0.45, score_threshold=0.01)
    assert out["boxes"].shape == (1, 5, 4) and out["scores"].shape == (1, 5)
    np.testing.assert_allclose(out["scores"][0], [0.9, 0.7, 0.6, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(out["boxes"][0, :3], [boxes[0, 0], boxes[0, 2], [0.0, 0.7, 0.2, 1.0]], atol=1e-6)
    assert not out["boxes"][0, 3:].any()
    np.testing.assert_allclose(out["presence"], [[0.9]], atol=1e-6)
    np.testing.assert_allclose(out["box"], boxes[:, 0], atol=1e-6)


@pytest.mark.parametrize("k,iou,want", [
    (2, 0.45, [0.9, 0.7]),              # K cuts the list
    (5, 0.95, [0.9, 0.8, 0.7, 0.6, 0]),  # a loose IoU threshold keeps the neighbour
])
def test_nms_settings(k, iou, want):
    from trainer.dense import postprocess

    scores, boxes = _score_map()
    out = postprocess(scores, boxes, max_detections=k, iou_threshold=iou, score_threshold=0.01)
    np.testing.assert_allclose(out["scores"][0], want, atol=1e-6)


def test_nms_on_a_decoded_score_map_finds_one_box_per_face(grid):
    """Hand-made raw outputs: a face lit on 2 x 2 stride-8 cells (boxes 43 px, overlapping at IoU
    >= 0.5) and one on a stride-16 cell: decode + NMS give one box each."""
    from trainer.dense import CellOutputs, DenseDecode, postprocess

    raw = np.full((1, grid.cells, 5), [-6.0, 0, 0, 0, 0], np.float32)
    for level, rows_cols, logit, dist in ((0, [(3, 3), (3, 4), (4, 3), (4, 4)], 3.0, 1.0), (1, [(3, 3)], 1.5, 0.2)):
        for cell in _cells(level, rows_cols, grid):
            raw[0, cell] = [logit, dist, dist, dist, dist]
    scores, boxes = CellOutputs()(DenseDecode(grid.to_config())(raw))
    out = postprocess(scores, boxes, max_detections=10, iou_threshold=0.45, score_threshold=0.5)
    kept = out["scores"][0] > 0
    assert kept.sum() == 2
    np.testing.assert_allclose(out["scores"][0, :2], 1 / (1 + np.exp([-3.0, -1.5])), atol=1e-6)
    centres = (out["boxes"][0, :2, :2] + out["boxes"][0, :2, 2:]) / 2 * SIZE
    assert np.abs(centres[0] - 32).max() <= 4 and np.abs(centres[1] - 56).max() <= 0.01


# --- the loss -------------------------------------------------------------------------------------

def _loss_case(grid):
    rng = np.random.default_rng(0)
    y_true = np.stack([_encode([(24, 24, 44, 44), (8, 8, 88, 88)], grid), _encode(np.zeros((0, 4)), grid)])
    y_pred = rng.normal(0, 1, y_true.shape).astype("float32")
    y_pred[..., 1:3] = rng.uniform(0, 0.5, y_pred[..., 1:3].shape)
    y_pred[..., 3:5] = y_pred[..., 1:3] + rng.uniform(0.05, 0.5, y_pred[..., 3:5].shape)
    return y_true, y_pred


def test_the_loss_ignores_negatives_boxes(grid):
    import tensorflow as tf

    from trainer.dense import DenseLoss

    loss = DenseLoss(box_weight=2.0)
    y_true, y_pred = _loss_case(grid)
    negative = y_true[..., 0] == 0
    base = float(loss(y_true, y_pred))

    other_pred = y_pred.copy()
    other_pred[..., 1:][negative] = np.random.default_rng(1).normal(0, 5, (negative.sum(), 4))  # any box
    other_true = y_true.copy()
    other_true[..., 1:][negative] = 0.5  # a box target on negative cells (not what encode writes)
    assert float(loss(y_true, other_pred)) == pytest.approx(base, rel=1e-6)
    assert float(loss(other_true, y_pred)) == pytest.approx(base, rel=1e-6)

    pred = tf.Variable(y_pred)
    with tf.GradientTape() as tape:
        value = loss(y_true, pred)
    grad = tape.gradient(value, pred).numpy()
    assert np.isfinite(grad).all()
    assert not grad[..., 1:][negative].any()           # negatives' boxes get no gradient
    assert grad[..., 1:][~negative].any()              # positives' boxes do
    assert grad[..., 0][negative].any()                # every cell's score trains

    moved = y_pred.copy()
    moved[..., 1:][~negative] += 0.05  # a positive cell's box moves: the loss moves
    assert float(loss(y_true, moved)) != pytest.approx(base, rel=1e-6)


def test_the_loss_of_an_all_negative_batch_is_finite_and_small_for_low_scores(grid):
    from trainer.dense import DenseLoss

    y_true = np.zeros((2, grid.cells, 5), np.float32)
    low = np.full((2, grid.cells, 5), -6.0, np.float32)
    high = np.full((2, grid.cells, 5), 3.0, np.float32)
    loss = DenseLoss()
    assert 0 <= float(loss(y_true, low)) < float(loss(y_true, high)) < np.inf


# --- the model --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model():
    import keras

    from trainer.dense import build_dense_detector

    keras.utils.set_random_seed(0)
    return build_dense_detector(image_size=64, alpha=0.35, weights="none", channels=16, depth=1)


def test_the_model_has_the_detector_interface_and_named_parts(model):
    from trainer.dense import grid_of

    images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3)).astype("float32")
    out = model.predict(images, verbose=0)
    grid = grid_of(model)
    assert grid.sizes == ((8, 8), (4, 4))
    from trainer.dense import MAX_DETECTIONS as K

    assert {k: v.shape for k, v in out.items()} == {"boxes": (3, K, 4), "scores": (3, K), "presence": (3, 1),
                                                   "box": (3, 4)}
    for name in ("preprocess", "backbone", "head", "decode", "postprocess"):
        model.get_layer(name)
    assert [tuple(t.shape[1:3]) for t in model.get_layer("backbone").outputs] == [(8, 8), (4, 4)]
    # scores sorted, boxes inside the image
    assert (np.diff(out["scores"], axis=1) <= 1e-7).all() and out["boxes"].min() >= 0 and out["boxes"].max() <= 1


def test_a_saved_model_reloads_and_predicts_identically_and_the_export_part_agrees(model, tmp_path):
    import keras

    from trainer.dense import export_model, postprocess, postprocess_config

    images = np.random.default_rng(1).integers(0, 256, (4, 64, 64, 3)).astype("float32")
    want = model.predict(images, verbose=0)
    model.save(tmp_path / "dense.keras")
    again = keras.models.load_model(tmp_path / "dense.keras", compile=False)
    got = again.predict(images, verbose=0)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)

    raw = export_model(again).predict(images, verbose=0)
    assert raw["scores"].shape == (4, 80) and raw["boxes"].shape == (4, 80, 4)
    host = postprocess(raw["scores"], raw["boxes"], **postprocess_config(again))
    for key in host:
        np.testing.assert_allclose(host[key], want[key], atol=1e-6, err_msg=key)


def test_a_local_weights_file_of_the_whole_backbone_loads_into_the_cut_one(tmp_path):
    import keras

    from trainer.dense import build_dense_detector
    from trainer.weights import build_backbone

    keras.utils.set_random_seed(5)
    full = build_backbone("mobilenetv2", image_size=64, alpha=0.35, weights="none")
    path = tmp_path / "mobilenetv2.weights.h5"
    full.save_weights(path)
    model = build_dense_detector(image_size=64, alpha=0.35, weights=str(path), channels=16, depth=1)
    bb = model.get_layer("backbone")
    for name in ("Conv1", "block_6_expand", "block_12_project"):
        np.testing.assert_array_equal(bb.get_layer(name).get_weights()[0], full.get_layer(name).get_weights()[0])
    assert "Conv_1" not in [layer.name for layer in bb.layers]  # the stride-32 part is gone


def test_the_training_twin_shares_the_weights(model):
    from trainer.dense import training_model

    twin = training_model(model)
    assert {id(w) for w in twin.weights} == {id(w) for w in model.weights}
    images = np.random.default_rng(2).integers(0, 256, (2, 64, 64, 3)).astype("float32")
    cells = twin.predict(images, verbose=0)["cells"]
    assert cells.shape == (2, 80, 5)
    out = model.predict(images, verbose=0)
    # the detector's best score and box are those of the best cell
    best = cells[..., 0].argmax(axis=1)
    np.testing.assert_allclose(out["presence"][:, 0], 1 / (1 + np.exp(-cells[[0, 1], best, 0])), atol=1e-6)
    np.testing.assert_allclose(out["box"], np.clip(cells[[0, 1], best, 1:], 0, 1), atol=1e-6)


# --- it learns: discs -------------------------------------------------------------------------------

DISC_SIZE = 64


def discs(n, *, seed):
    """`n` noisy dark images with 0-5 bright, non-touching discs (radius 4-13 px) and their
    normalised boxes."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 60, (n, DISC_SIZE, DISC_SIZE, 3)).astype("float32")
    boxes = []
    for i in range(n):
        placed = []  # (cx, cy, r)
        for _ in range(rng.integers(0, 6)):
            for _attempt in range(20):
                r = rng.uniform(4, 13)
                cx, cy = rng.uniform(r, DISC_SIZE - r, 2)
                if all(np.hypot(cx - x, cy - y) > r + q + 2 for x, y, q in placed):
                    placed.append((cx, cy, r))
                    y0, x0 = int(cy - r), int(cx - r)
                    yy, xx = np.mgrid[y0:int(cy + r) + 1, x0:int(cx + r) + 1] + 0.5
                    images[i, y0:y0 + yy.shape[0], x0:x0 + yy.shape[1]][(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = \
                        rng.uniform(180, 255, 3)
                    break
        boxes.append(np.array([(x - q, y - q, x + q, y + q) for x, y, q in placed], np.float32).reshape(-1, 4)
                     / DISC_SIZE)
    return images, boxes


def test_a_short_fit_from_scratch_finds_the_discs():
    import keras
    import tensorflow as tf

    from trainer.dense import build_dense_detector, compile_dense, encode_targets, grid_of, training_model
    from trainer.metrics import iou_matrix

    keras.utils.set_random_seed(0)
    model = build_dense_detector(image_size=DISC_SIZE, alpha=0.35, weights="none", channels=32, depth=1)
    grid = grid_of(model)
    train_images, train_boxes = discs(384, seed=1)
    @tf.function(input_signature=[tf.TensorSpec((None, 4), tf.float32)])
    def encode(boxes):
        return encode_targets(boxes, grid)

    targets = tf.stack([encode(b) for b in train_boxes])
    twin = training_model(model)
    compile_dense(twin, optimizer=keras.optimizers.Adam(3e-3))
    ds = tf.data.Dataset.from_tensor_slices((train_images, {"cells": targets})).shuffle(384, seed=0).batch(16)
    twin.fit(ds, epochs=8, verbose=0)

    images, boxes = discs(64, seed=2)
    out = model.predict(images, verbose=0)
    found = total = false_alarms = 0
    for gts, dets, scores in zip(boxes, out["boxes"], out["scores"]):
        dets = dets[scores >= 0.5]
        total += len(gts)
        if len(gts) and len(dets):
            ious = iou_matrix(gts, dets)
            found += int((ious.max(axis=1) >= 0.5).sum())
            false_alarms += int((ious.max(axis=0) < 0.5).sum())
        else:
            false_alarms += len(dets)
    assert total > 100
    assert found >= 0.8 * total, (found, total)
    assert false_alarms <= 0.2 * total, (false_alarms, total)


# --- the feature cache with two tap maps ----------------------------------------------------------

@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A local weights file of the whole notop MobileNetV2 (random, seeded): a frozen backbone."""
    import keras

    from trainer.weights import build_backbone

    path = tmp_path_factory.mktemp("weights") / "mobilenetv2.weights.h5"
    keras.utils.set_random_seed(11)
    build_backbone("mobilenetv2", image_size=64, alpha=0.35, weights="none").save_weights(str(path))
    return path


def _twin(weights_file, fine_tune_layers):
    import keras

    from trainer.dense import build_dense_detector, compile_dense, training_model
    from trainer.models import set_trainable

    keras.utils.set_random_seed(0)
    model = build_dense_detector(image_size=64, alpha=0.35, weights=str(weights_file), channels=16, depth=1)
    twin = training_model(model)
    set_trainable(twin, fine_tune_layers)
    compile_dense(twin, optimizer=keras.optimizers.SGD(0.05))
    return model, twin


@pytest.mark.parametrize("layers,boundary,tensors", [
    (0, "block_13_expand_relu", ("block_6_expand_relu", "block_13_expand_relu")),  # heads: both taps
    (3, "block_12_add", ("block_6_expand_relu", "block_12_add")),                  # + the stride-8 tap below
    (10, "block_11_add", ("block_6_expand_relu", "block_11_add")),                 # down to a block boundary
])
def test_the_cache_of_a_dense_backbone_holds_every_tensor_crossing_the_cut(weights_file, layers, boundary, tensors):
    from trainer.feature_cache import find_boundary

    model, _ = _twin(weights_file, 0)
    found = find_boundary(model.get_layer("backbone"), layers)
    assert (found.layer, found.tensors) == (boundary, tensors)
    assert found.shapes[0] == (8, 8, 96) and found.multiple


@pytest.mark.parametrize("layers", [0, 12])
def test_one_step_on_cached_tap_maps_gives_the_same_update(weights_file, layers):
    from trainer.dense import encode_targets, grid_of
    from trainer.feature_cache import compile_like, find_boundary, split_model

    images = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3)).astype("float32")
    _, boxes = discs(4, seed=3)
    model, plain = _twin(weights_file, layers)
    targets = {"cells": np.stack([encode_targets(b, grid_of(model)).numpy() for b in boxes])}
    start = plain.get_weights()
    want = plain.train_on_batch(images, targets, return_dict=True)
    expected = plain.get_weights()

    model, cached = _twin(weights_file, layers)
    np.testing.assert_array_equal(np.concatenate([w.ravel() for w in cached.get_weights()]),
                                  np.concatenate([w.ravel() for w in start]))
    split = split_model(cached, find_boundary(model.get_layer("backbone"), layers))
    compile_like(split.cached_model, cached)
    features = split.extractor.predict_on_batch(images)
    assert len(features) == 2
    got = split.cached_model.train_on_batch(tuple(features), targets, return_dict=True)
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
    for a, b, before in zip(cached.get_weights(), expected, start):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert sum(not np.array_equal(a, b) for a, b in zip(expected, start)) > 0


def test_two_tap_maps_cached_in_memory_and_on_disk_give_the_same_batches(weights_file, tmp_path):
    import tensorflow as tf

    from trainer.dense import encode_targets, grid_of
    from trainer.feature_cache import FeatureCache

    model, twin = _twin(weights_file, 0)
    grid = grid_of(model)
    images, boxes = discs(40, seed=4)
    targets = np.stack([encode_targets(b, grid).numpy() for b in boxes])
    splits = {"train": slice(0, 32), "val": slice(32, 40)}

    def pipeline(part):
        return lambda: tf.data.Dataset.from_tensor_slices((images[part], {"cells": targets[part]})).batch(16)

    def prepare(run, ram):
        logs = []
        cache = FeatureCache(run, pipelines={s: pipeline(p) for s, p in splits.items()},
                             counts={"train": 32, "val": 8}, fingerprint={"records": "discs"}, batch_size=16,
                             ram_fraction=ram, log=logs.append, progress=False)
        return cache.prepare(twin, phase="heads", fine_tune_layers=0), logs

    memory, _ = prepare(tmp_path / "m", 1.0)
    disk, logs = prepare(tmp_path / "d", 0.0)
    assert (memory.info["mode"], disk.info["mode"]) == ("memory", "disk")
    assert disk.info["tensors"] == ["block_6_expand_relu", "block_13_expand_relu"]
    assert disk.info["bytes"] == 40 * (8 * 8 * 96 + 4 * 4 * 192) * 4
    assert any("caching the backbone's outputs (block_6_expand_relu, block_13_expand_relu)" in line for line in logs)
    folder = tmp_path / "d" / "feature_cache" / disk.info["key"][:16]
    assert sorted(p.name for p in folder.glob("train.*")) == [
        "train.features-0.npy", "train.features-1.npy", "train.targets.npz"]
    for (fa, ta), (fb, tb) in zip(memory.train, disk.train):
        assert isinstance(fa, tuple) and [f.shape[1:] for f in fa] == [(8, 8, 96), (4, 4, 192)]
        for a, b in zip(fa, fb):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        np.testing.assert_array_equal(ta["cells"].numpy(), tb["cells"].numpy())
    logs_before = memory.model.evaluate(memory.val, verbose=0, return_dict=True)
    memory.model.fit(memory.train, epochs=1, verbose=0)  # the cached model trains on the tuples
    assert memory.model.evaluate(memory.val, verbose=0, return_dict=True)["loss"] != logs_before["loss"]

    again, logs = prepare(tmp_path / "d", 0.0)  # the same data and weights: reused from disk
    assert again.info["reused"] is True


def test_the_export_part_converts_to_tflite_with_builtin_ops_and_agrees(model, tmp_path):
    """Decoding is in the graph with builtin ops only; NMS runs on the host (`postprocess`)."""
    import tensorflow as tf

    from trainer.dense import export_model, postprocess, postprocess_config

    part = export_model(model)
    converter = tf.lite.TFLiteConverter.from_keras_model(part)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # fails on any other op
    interpreter = tf.lite.Interpreter(model_content=converter.convert())
    interpreter.allocate_tensors()
    images = np.random.default_rng(3).integers(0, 256, (1, 64, 64, 3)).astype("float32")
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], images)
    interpreter.invoke()
    raw = {}
    for detail in interpreter.get_output_details():
        value = interpreter.get_tensor(detail["index"])
        raw["boxes" if value.ndim == 3 else "scores"] = value
    want = model.predict(images, verbose=0)
    got = postprocess(raw["scores"], raw["boxes"], **postprocess_config(model))
    np.testing.assert_allclose(got["presence"], want["presence"], atol=1e-4)
    np.testing.assert_allclose(got["box"], want["box"], atol=1e-4)
    # per cell, the same numbers as Keras
    keras_raw = part(images, training=False)
    np.testing.assert_allclose(raw["scores"], np.asarray(keras_raw["scores"]), atol=1e-4)
    np.testing.assert_allclose(raw["boxes"], np.asarray(keras_raw["boxes"]), atol=1e-4)
    # after NMS, the same faces (best first), but for cells within float noise of the score threshold,
    # which an untrained model has plenty of
    clear = int(np.sum(want["scores"][0] > postprocess_config(model)["score_threshold"] + 1e-3))
    np.testing.assert_allclose(got["scores"][0][:clear], want["scores"][0][:clear], atol=1e-4)
    np.testing.assert_allclose(got["boxes"][0][:clear], want["boxes"][0][:clear], atol=1e-4)


def test_two_hundred_faces_each_train_and_fit_in_the_outputs():
    from trainer.dense import MAX_DETECTIONS, DenseGrid

    # a 224 px input (28 x 28 and 14 x 14 cells) with 20 x 10 faces of 8 px, 11.2 px apart
    grid = DenseGrid(image_size=224, sizes=[(28, 28), (14, 14)])
    boxes = [(11.2 * c + 1.6, 22.4 * r + 7.2, 11.2 * c + 9.6, 22.4 * r + 15.2) for r in range(10) for c in range(20)]
    t = _encode(boxes, grid)
    targets = t[t[:, 0] == 1, 1:]
    norm = np.asarray(boxes, np.float32) / 224
    assert all(np.isclose(targets, b, atol=1e-6).all(axis=1).any() for b in norm)  # every face trains
    assert MAX_DETECTIONS >= len(boxes)  # and all of them fit in the K outputs


@pytest.mark.parametrize("size", [64, 120])  # 120: 15 x 15 and 8 x 8 cells, the upsampled map is cropped
def test_a_call_without_training_is_inference_as_in_every_export(size):
    # a layer that records `training=True` in its node (keras.layers.Resizing does) would put the
    # BatchNorms after it in training mode whenever `training` is not passed: SavedModel, TFLite
    # and ONNX exports call the model that way
    import keras

    from trainer.dense import build_dense_detector, export_model

    model = build_dense_detector(backbone="mobilenetv2", image_size=size, alpha=0.35, weights="none")
    for layer in model.get_layer("backbone").layers:  # moving statistics far from a batch's own
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(layer.moving_mean + 0.5)
    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    part = export_model(model)
    np.testing.assert_allclose(np.asarray(part(x)["scores"]), np.asarray(part(x, training=False)["scores"]),
                               atol=1e-6)
