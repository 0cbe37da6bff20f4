"""Evaluation metrics on plain numpy arrays (unit-tested on hand-computed cases).

Boxes are `(n, 4)` `[x_min, y_min, x_max, y_max]` in one consistent unit (pixels or normalized).
AP comes from pycocotools (the COCO reference implementation: greedy matching by score,
101-point interpolated precision, AP@[.5:.95] the mean over IoU 0.50, 0.55, ..., 0.95).
"""

from __future__ import annotations

import contextlib
import io

import numpy as np


def order_corners(boxes) -> np.ndarray:
    """`(n, 4)` boxes with x_min <= x_max and y_min <= y_max (a regressor may swap them)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.concatenate([np.minimum(b[:, :2], b[:, 2:]), np.maximum(b[:, :2], b[:, 2:])], axis=1)


def iou_matrix(a, b) -> np.ndarray:
    """IoU of every box in `a` `(n, 4)` with every box in `b` `(m, 4)` -> `(n, m)`."""
    a, b = order_corners(a), order_corners(b)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def presence_metrics(y_true, scores, *, threshold: float = 0.5) -> dict:
    """Image-level face / no face: accuracy, precision, recall, F1 at `threshold`, ROC AUC.

    Precision (recall) is 0 when nothing is predicted (present) positive, as scikit-learn's
    `zero_division=0`. `auc` is None when the split has only one class.
    """
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(scores, np.float64).ravel()
    pred = s >= threshold
    tp, fp = int(np.sum(pred & y)), int(np.sum(pred & ~y))
    fn, tn = int(np.sum(~pred & y)), int(np.sum(~pred & ~y))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    auc = float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else None
    return {"accuracy": (tp + tn) / len(y) if len(y) else 0.0, "precision": precision, "recall": recall,
            "f1": f1, "auc": auc, "tp": tp, "fp": fp, "fn": fn, "tn": tn, "threshold": threshold}


def localization_metrics(gt_boxes, pred_boxes, found, *, iou_threshold: float = 0.5) -> dict:
    """How well the boxes of found faces sit.

    `gt_boxes[i]`: `(n_i, 4)` ground truth of image i; `pred_boxes[i]`: its one predicted box;
    `found[i]`: the model said "face" for image i. Over the images with a face that the model found:
    `mean_iou` (IoU with the best-matching true box) and `found_iou_ge` (share with IoU >=
    `iou_threshold`). `face_recall` is the share of *all* true faces matched at that IoU (one
    per image at most for a one-box model).
    """
    ious = []
    matched = 0
    total = 0
    for gts, box, hit in zip(gt_boxes, pred_boxes, found):
        gts = np.asarray(gts, np.float64).reshape(-1, 4)
        total += len(gts)
        if not len(gts) or not hit:
            continue
        best = float(iou_matrix(np.asarray(box).reshape(1, 4), gts).max())
        ious.append(best)
        matched += best >= iou_threshold
    return {"images_found": len(ious), "mean_iou": float(np.mean(ious)) if ious else None,
            "found_iou_ge": float(np.mean(np.asarray(ious) >= iou_threshold)) if ious else None,
            "face_recall": matched / total if total else None, "faces": total, "iou_threshold": iou_threshold}


# COCO's area ranges (pixels squared): small < 32^2 <= medium < 96^2 <= large
AREA_RANGES = ("small", "medium", "large")


def coco_ap(gt_boxes, det_boxes, det_scores) -> dict:
    """COCO box AP over a set of images (pycocotools; category 'face').

    `gt_boxes[i]` `(n_i, 4)`, `det_boxes[i]` `(k_i, 4)`, `det_scores[i]` `(k_i,)` for image i,
    xyxy. Returns `ap50`, `ap50_95` (None without any true box), `ap50_small`, `ap50_medium`,
    `ap50_large` (AP@0.5 over the faces of COCO's area ranges, in the boxes' own pixels; None where
    the range holds no true face) and `pr50`: `(recall, precision)` arrays of the interpolated
    curve at IoU 0.5.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    for i, (gts, dets, scores) in enumerate(zip(gt_boxes, det_boxes, det_scores)):
        images.append({"id": i})
        for b in order_corners(gts):
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": 1, "iscrowd": 0,
                                "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1])})
        for b, s in zip(order_corners(dets), np.asarray(scores, np.float64).ravel()):
            results.append({"image_id": i, "category_id": 1, "score": float(s),
                            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
    by_range = {f"ap50_{r}": None for r in AREA_RANGES}
    if not annotations:
        return {"ap50": None, "ap50_95": None, **by_range, "pr50": (np.zeros(0), np.zeros(0))}
    if not results:
        return {"ap50": 0.0, "ap50_95": 0.0, **by_range, "pr50": (np.zeros(0), np.zeros(0))}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "face"}]}
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.imgIds = [im["id"] for im in images]
        # every face an image holds counts: COCO's default stops at 100 detections per image
        ev.params.maxDets = [1, 10, max(100, max(len(d) for d in det_boxes))]
        ev.evaluate()
        ev.accumulate()
    # precision: [iou thresholds, recall thresholds, categories, area ranges (all, small, medium,
    # large), max dets]
    prec = ev.eval["precision"]
    p = prec[:, :, 0, 0, -1]

    def mean_valid(x):
        v = x[x > -1]
        return float(v.mean()) if v.size else 0.0

    for k, r in enumerate(AREA_RANGES, start=1):
        v = prec[0, :, 0, k, -1]
        by_range[f"ap50_{r}"] = float(v[v > -1].mean()) if (v > -1).any() else None
    return {"ap50": mean_valid(p[0]), "ap50_95": mean_valid(p), **by_range,
            "pr50": (np.asarray(ev.params.recThrs), np.where(p[0] > -1, p[0], 0.0))}


def match_faces(gts, dets, scores, *, iou_threshold: float = 0.5, threshold: float = 0.5) -> dict:
    """One image's faces and detections matched greedily by score (as COCO does), counting only
    detections scoring at least `threshold`. Returns index lists: `hits` (detections that found a
    face), `false_alarms` (detections matching no face), `missed` (faces no detection found)."""
    gts = order_corners(gts)
    keep = [k for k in np.argsort(-np.asarray(scores, np.float64).ravel(), kind="stable") if scores[k] >= threshold]
    ious = iou_matrix(np.asarray(dets).reshape(-1, 4)[keep], gts) if len(keep) and len(gts) else None
    taken, hits, false_alarms = set(), [], []
    for row, k in enumerate(keep):
        best, best_iou = None, iou_threshold
        for j in range(len(gts)):
            if j not in taken and ious is not None and ious[row, j] >= best_iou:
                best, best_iou = j, ious[row, j]
        if best is None:
            false_alarms.append(int(k))
        else:
            taken.add(best)
            hits.append(int(k))
    return {"hits": hits, "false_alarms": false_alarms, "missed": [j for j in range(len(gts)) if j not in taken]}
