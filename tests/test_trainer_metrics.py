"""Metric and loss code of the trainer on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from trainer import metrics as M

# 101-point interpolation (COCO): precision 1 up to recall 0.5 (51 points), 2/3 after (50 points)
AP_ONE_FP_BETWEEN = (51 * 1.0 + 50 * (2 / 3)) / 101


@pytest.mark.parametrize("a,b,expected", [
    ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),          # identical
    ([0, 0, 10, 10], [5, 0, 15, 10], 50 / 150),     # half overlap sideways
    ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),        # disjoint
    ([10, 10, 0, 0], [0, 0, 10, 10], 1.0),          # swapped corners are put in order
    ([0, 0, 10, 10], [0, 0, 10, 16], 100 / 160),    # contained, taller
    ([0, 0, 0, 10], [0, 0, 10, 10], 0.0),           # zero-width box
])
def test_iou_matrix_cases(a, b, expected):
    assert M.iou_matrix([a], [b])[0, 0] == pytest.approx(expected)


def test_iou_matrix_shape_is_n_by_m():
    assert M.iou_matrix(np.zeros((3, 4)), np.ones((2, 4))).shape == (3, 2)


@pytest.mark.parametrize("y,scores,thr,expected", [
    # tp=2 fp=1 fn=1 tn=1: acc 3/5, precision 2/3, recall 2/3
    ([1, 1, 1, 0, 0], [0.9, 0.8, 0.2, 0.7, 0.1], 0.5, dict(accuracy=0.6, precision=2 / 3, recall=2 / 3, f1=2 / 3)),
    # nothing predicted positive: precision and F1 are 0, not NaN
    ([1, 0], [0.1, 0.2], 0.5, dict(accuracy=0.5, precision=0.0, recall=0.0, f1=0.0)),
    # a higher threshold turns the 0.7 negative into a true negative: acc 4/5
    ([1, 1, 1, 0, 0], [0.9, 0.8, 0.2, 0.7, 0.1], 0.75, dict(accuracy=0.8, precision=1.0, recall=2 / 3, f1=0.8)),
])
def test_presence_metrics_cases(y, scores, thr, expected):
    got = M.presence_metrics(y, scores, threshold=thr)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key


@pytest.mark.parametrize("y,scores,auc", [
    ([1, 1, 0, 0], [0.9, 0.8, 0.3, 0.1], 1.0),      # perfectly ranked
    ([1, 0, 1, 0], [0.9, 0.8, 0.3, 0.1], 0.75),     # one of four pairs misordered
    ([1, 1], [0.9, 0.8], None),                     # one class only: undefined
])
def test_presence_auc_cases(y, scores, auc):
    got = M.presence_metrics(y, scores)["auc"]
    assert got == (None if auc is None else pytest.approx(auc))


def test_localization_metrics_counts_only_found_faces():
    gts = [np.array([[0, 0, 10, 10]]),                      # found, IoU 1
           np.array([[0, 0, 10, 10]]),                      # found, IoU 1/3
           np.array([[0, 0, 10, 10]]),                      # missed (score below threshold): not in mean IoU
           np.zeros((0, 4)),                                # negative image: ignored
           np.array([[0, 0, 10, 10], [20, 20, 40, 40]])]    # two faces: the best match counts (IoU 1)
    preds = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [0, 0, 10, 10], [1, 1, 2, 2], [20, 20, 40, 40]])
    found = [True, True, False, True, True]
    got = M.localization_metrics(gts, preds, found, iou_threshold=0.5)
    assert got["images_found"] == 3
    assert got["mean_iou"] == pytest.approx((1 + 1 / 3 + 1) / 3)
    assert got["found_iou_ge"] == pytest.approx(2 / 3)
    assert got["face_recall"] == pytest.approx(2 / 5)   # 2 faces matched of 5 true faces
    assert got["faces"] == 5


@pytest.mark.parametrize("gts,dets,scores,ap50,ap50_95", [
    # one image, one exact detection
    ([[[0, 0, 10, 10]]], [[[0, 0, 10, 10]]], [[0.9]], 1.0, 1.0),
    # two faces, ranked TP, FP, TP: precision 1 at recall .5, 2/3 at recall 1
    ([[[0, 0, 10, 10]], [[50, 50, 60, 60]]], [[[0, 0, 10, 10]], [[0, 0, 5, 5], [50, 50, 60, 60]]],
     [[0.9], [0.8, 0.7]], AP_ONE_FP_BETWEEN, AP_ONE_FP_BETWEEN),
    # IoU 0.625 passes thresholds .50, .55, .60 only: 3 of 10
    ([[[0, 0, 10, 10]]], [[[0, 0, 10, 16]]], [[0.9]], 1.0, 0.3),
    # the missed face keeps the recall denominator: recall tops at 1/2 -> 51 of 101 points
    ([[[0, 0, 10, 10]], [[50, 50, 60, 60]]], [[[0, 0, 10, 10]], np.zeros((0, 4))], [[0.9], []], 51 / 101, 51 / 101),
    # a detection on a face-less image ranked first: precision 1/2 everywhere
    ([[[0, 0, 10, 10]], np.zeros((0, 4))], [[[0, 0, 10, 10]], [[0, 0, 5, 5]]], [[0.5], [0.9]], 0.5, 0.5),
])
def test_coco_ap_hand_computed(gts, dets, scores, ap50, ap50_95):
    got = M.coco_ap([np.asarray(g, float) for g in gts], [np.asarray(d, float) for d in dets], scores)
    assert got["ap50"] == pytest.approx(ap50, abs=1e-6)
    assert got["ap50_95"] == pytest.approx(ap50_95, abs=1e-6)


def test_coco_ap_without_true_boxes_is_undefined():
    assert M.coco_ap([np.zeros((0, 4))], [np.array([[0, 0, 1, 1.0]])], [[0.9]])["ap50"] is None


# --- Keras losses and metrics used while training (boxes normalized, -1 rows = no face) ---

@pytest.mark.parametrize("y_true,y_pred,expected", [
    # corner off by (0.1, 0.2), same size: 0.01 + 0.04
    ([[0.1, 0.1, 0.5, 0.5]], [[0.2, 0.3, 0.6, 0.7]], 0.05),
    # same corner, width 0.4 vs 0.2 and height 0.4 vs 0.1: 0.04 + 0.09
    ([[0.1, 0.1, 0.5, 0.5]], [[0.1, 0.1, 0.3, 0.2]], 0.13),
    # a negative (-1 row) contributes nothing, the mean is over faces only
    ([[0.1, 0.1, 0.5, 0.5], [-1, -1, -1, -1]], [[0.2, 0.3, 0.6, 0.7], [0.9, 0.9, 0.1, 0.1]], 0.05),
    # only negatives: zero loss
    ([[-1, -1, -1, -1]], [[0.3, 0.3, 0.9, 0.9]], 0.0),
])
def test_localization_loss_seed_form(y_true, y_pred, expected):
    from trainer.losses import localization_loss

    per_image = np.asarray(localization_loss(np.asarray(y_true, np.float32), np.asarray(y_pred, np.float32)))
    assert per_image.mean() == pytest.approx(expected, abs=1e-6)


def test_masked_iou_metric_ignores_negatives():
    from trainer.losses import MaskedIoU

    m = MaskedIoU()
    m.update_state(np.array([[0, 0, .5, .5], [-1, -1, -1, -1]], np.float32),
                   np.array([[0, 0, .5, .25], [0, 0, 1, 1]], np.float32))
    assert float(m.result()) == pytest.approx(0.5)
