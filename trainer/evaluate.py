"""`trainer evaluate` for face detectors: a run on one split of a TFDIR -> `metrics.json`,
`pr_curve.png` and `worst.png` (the detection entries' `evaluate` in `trainer.tasks`, which picks a
run's entry).

Every face counts: a detector's `boxes` / `scores` outputs (the dense head: every face it finds,
after NMS) are matched against every true box. COCO AP@0.5 and AP@[.5:.95] come from pycocotools,
and AP@0.5 per COCO area range (small < 32^2 <= medium < 96^2 <= large) in the model's *input*
pixels, which is what decides whether a face is small for the model. A one-box model (`--head
single`) proposes one box per image; its metrics say how far that caps recall on the split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datatool.core.errors import DatatoolError
from datatool.core.fsutil import write_json_atomic

from . import data as tdata
from . import metrics as M

ONE_BOX_NOTE = ("a one-box model finds at most one face per image: {multi} of {images} images here have "
                "several faces, so face recall and AP cannot exceed {cap:.3f} (faces that are the largest "
                "of their image / all faces)")
WORST = 16  # images drawn in worst.png


def _detections(out) -> tuple[list, list]:
    """Per image of a batch: `(boxes (k, 4) normalized, corners ordered; scores (k,))`, every box
    the model proposes (`boxes`/`scores`; zero scores pad K and are dropped), or its one box."""
    if "boxes" in out and "scores" in out:
        boxes, scores = np.asarray(out["boxes"], np.float64), np.asarray(out["scores"], np.float64)
        return ([M.order_corners(np.clip(b[s > 0], 0, 1)) for b, s in zip(boxes, scores)],
                [s[s > 0] for s in scores])
    box = M.order_corners(np.clip(np.asarray(out["box"], np.float64), 0, 1))
    return [b[None] for b in box], [np.asarray([v]) for v in np.asarray(out["presence"], np.float64).reshape(-1)]


def predict_split(model, tfdir: Path, split: str, *, image_size: int, batch_size: int = 32) -> dict:
    """Run the model over a split. Returns: `scores` (n,) each image's best score, `pred` (n, 4)
    its best box, `dets` / `det_scores` lists of every box (k_i, 4) and score (k_i,), `gt` list of
    (n_i, 4), all normalized xyxy; `sizes` (n, 2) width/height; `ids`; `image_size`."""
    import tensorflow as tf

    ds = tdata.make_dataset(tfdir, split, image_size=image_size, batch_size=batch_size, with_meta=True)
    dets, det_scores, gts, sizes, ids = [], [], [], [], []
    one_box = True
    try:
        for images, _, meta in ds:
            out = model.predict_on_batch(images)  # a traced predict step, not eager calls
            one_box = one_box and "boxes" not in out
            boxes, scores = _detections(out)
            dets.extend(boxes)
            det_scores.extend(scores)
            for b in meta["boxes"]:
                gts.append(np.asarray(b).reshape(-1, 4))
            sizes.append(np.stack([np.asarray(meta["width"]), np.asarray(meta["height"])], axis=1))
            ids.extend(s.decode("utf-8", "replace") for s in np.asarray(meta["source_id"]))
    except tf.errors.OpError as e:
        raise DatatoolError(f"{tfdir}: {split} shards: cannot read records ({e.message.splitlines()[0]})") from e
    if not ids:
        raise DatatoolError(f"{tfdir}: the {split} split is empty")
    best = [int(np.argmax(s)) if len(s) else -1 for s in det_scores]
    return {"scores": np.asarray([s[k] if k >= 0 else 0.0 for s, k in zip(det_scores, best)]),
            "pred": np.asarray([d[k] if k >= 0 else np.zeros(4) for d, k in zip(dets, best)]).reshape(-1, 4),
            "dets": dets, "det_scores": det_scores, "gt": gts,
            "sizes": np.concatenate(sizes).astype(np.float64), "ids": ids, "image_size": int(image_size),
            "one_box": one_box}


def compute_metrics(pred: dict, *, iou: float = 0.5, threshold: float = 0.5) -> dict:
    """All detection metrics from `predict_split`'s output (boxes scaled to pixels first)."""
    scale = np.concatenate([pred["sizes"], pred["sizes"]], axis=1)
    gt_px = [g * scale[i] for i, g in enumerate(pred["gt"])]
    pred_px = pred["pred"] * scale
    has_face = np.array([len(g) > 0 for g in gt_px])
    found = pred["scores"] >= threshold
    out = {"images": len(gt_px), "images_with_faces": int(has_face.sum()), "faces": int(sum(map(len, gt_px))),
           "presence": M.presence_metrics(has_face, pred["scores"], threshold=threshold),
           "localization": M.localization_metrics(gt_px, pred_px, found, iou_threshold=iou)}
    s = pred["image_size"]  # AP in the model's input pixels: what makes a face small for it
    ap = M.coco_ap([g * s for g in pred["gt"]], [d * s for d in pred["dets"]], pred["det_scores"])
    out.update({k: v for k, v in ap.items() if k != "pr50"})
    matches = [M.match_faces(g, d, sc, iou_threshold=iou, threshold=threshold)
               for g, d, sc in zip(pred["gt"], pred["dets"], pred["det_scores"])]
    hits = sum(len(m["hits"]) for m in matches)
    out["faces_found"] = {"threshold": threshold, "iou_threshold": iou, "found": hits,
                          "missed": sum(len(m["missed"]) for m in matches),
                          "false_alarms": sum(len(m["false_alarms"]) for m in matches),
                          "recall": hits / out["faces"] if out["faces"] else None}
    multi = int(sum(len(g) > 1 for g in gt_px))
    if pred.get("one_box") and multi:
        out["note"] = ONE_BOX_NOTE.format(multi=multi, images=len(gt_px), cap=int(has_face.sum()) / out["faces"])
    out["_pr50"] = ap["pr50"]
    out["_matches"] = matches
    return out


def worst_images(metrics: dict, pred: dict, *, n: int = WORST) -> list[int]:
    """Indices of the `n` images with the most misses + false alarms (ties: the lowest best IoU)."""
    def badness(k):
        m = metrics["_matches"][k]
        errors = len(m["missed"]) + len(m["false_alarms"])
        g, d = pred["gt"][k], pred["dets"][k]
        best = float(M.iou_matrix(d, g).max()) if len(g) and len(d) else 0.0
        return (-errors, best)

    bad = [k for k in range(len(pred["ids"])) if metrics["_matches"][k]["missed"] or metrics["_matches"][k]["false_alarms"]]
    return sorted(bad, key=badness)[:n]


def plot_worst(metrics: dict, pred: dict, tfdir: Path, split: str, path: Path, *, batch_size: int = 32) -> int:
    """`worst.png`: the images with the most errors at the metrics' threshold and IoU, each drawn
    at the model's input size: found faces green, missed faces red, false alarms orange. Returns
    how many images it shows (0: nothing wrong, no file written)."""
    from datatool.core.draw import contact_sheet, draw_boxes, save_rgb

    chosen = worst_images(metrics, pred)
    if not chosen:
        return 0
    want, drawn = set(chosen), {}
    s = pred["image_size"]
    ds = tdata.make_dataset(tfdir, split, image_size=s, batch_size=batch_size)
    k = 0
    for images, _ in ds:  # the same order as predict_split (no shuffle)
        for img in np.asarray(images):
            if k in want:
                m = metrics["_matches"][k]
                g, d, sc = pred["gt"][k] * s, pred["dets"][k] * s, pred["det_scores"][k]
                rgb = np.clip(img, 0, 255).astype(np.uint8)
                rgb = draw_boxes(rgb, [g[j] for j in m["missed"]], color=(230, 40, 40), thickness=1)
                rgb = draw_boxes(rgb, [d[j] for j in m["false_alarms"]], color=(255, 150, 0), thickness=1,
                                 captions=[f"{sc[j]:.2f}" for j in m["false_alarms"]])
                rgb = draw_boxes(rgb, [d[j] for j in m["hits"]], color=(0, 200, 80), thickness=1)
                drawn[k] = rgb
            k += 1
        if len(drawn) == len(want):
            break
    titles = [f"{Path(pred['ids'][k]).stem[:18]}: {len(metrics['_matches'][k]['missed'])} missed, "
              f"{len(metrics['_matches'][k]['false_alarms'])} false" for k in chosen]
    save_rgb(path, contact_sheet([drawn[k] for k in chosen], titles=titles, cell=256, cols=4))
    return len(chosen)


def plot_pr(metrics: dict, pred: dict, path: Path, *, title: str) -> None:
    """Two panels: box PR at IoU 0.5 (COCO interpolated) and image-level presence PR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    from datatool.core.fsutil import atomic_path

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4.4))
    rec, prec = metrics["_pr50"]
    if len(rec):
        a.plot(rec, prec, lw=2)
    a.set_title(f"boxes at IoU 0.5: AP {_fmt(metrics['ap50'])}")
    has_face = np.array([len(g) > 0 for g in pred["gt"]])
    if 0 < has_face.sum() < len(has_face):
        p, r, _ = precision_recall_curve(has_face, pred["scores"])
        b.plot(r, p, lw=2, color="tab:orange")
    b.set_title(f"face present (image level): AUC {_fmt(metrics['presence']['auc'])}")
    for ax in (a, b):
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1.01)
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def evaluate_detection(run: Path, tfdir: Path, *, model, config: dict, split: str = "test", iou: float = 0.5,
                       threshold: float = 0.5, out: Path | None = None, batch_size: int = 32) -> dict:
    """RUN's loaded `model` on TFDIR's `split`; writes `metrics.json` and `pr_curve.png` into `out`
    (default RUN). Returns the metrics."""
    pred = predict_split(model, tfdir, split, image_size=int(config["image_size"]), batch_size=batch_size)
    metrics = compute_metrics(pred, iou=iou, threshold=threshold)
    out = Path(out) if out else Path(run)
    out.mkdir(parents=True, exist_ok=True)
    plot_pr(metrics, pred, out / "pr_curve.png", title=f"{Path(run).name} on {split} ({metrics['images']} images)")
    metrics["worst_images"] = plot_worst(metrics, pred, tfdir, split, out / "worst.png", batch_size=batch_size)
    metrics.pop("_pr50")
    metrics.pop("_matches")
    metrics.update(split=split, tfdir=str(Path(tfdir).resolve()), run=str(Path(run).resolve()),
                   record_sha256=tdata.record_hash(tfdir))
    write_json_atomic(out / "metrics.json", metrics)
    return metrics


def summary_lines(m: dict) -> list[str]:
    """What `trainer evaluate` prints for a detector's metrics."""
    p, loc = m["presence"], m["localization"]
    lines = [
        f"{m['split']}: {m['images']} images, {m['images_with_faces']} with faces",
        f"presence   accuracy {p['accuracy']:.3f}  precision {p['precision']:.3f}  recall {p['recall']:.3f}  "
        f"F1 {p['f1']:.3f}  AUC {_fmt(p['auc'])}  (threshold {p['threshold']:g})",
        f"boxes      mean IoU {_fmt(loc['mean_iou'])} on {loc['images_found']} faces found;  "
        f"IoU >= {loc['iou_threshold']:g}: {_fmt(loc['found_iou_ge'])} of found, face recall {_fmt(loc['face_recall'])}",
        f"AP         AP@0.5 {_fmt(m['ap50'])}  AP@[.5:.95] {_fmt(m['ap50_95'])}  AP@0.5 by face size in "
        f"input pixels: small {_fmt(m.get('ap50_small'))}  medium {_fmt(m.get('ap50_medium'))}  "
        f"large {_fmt(m.get('ap50_large'))}",
    ]
    f = m.get("faces_found")
    if f:
        lines.append(f"faces      {f['found']} of {m['faces']} found, {f['missed']} missed, {f['false_alarms']} false "
                     f"alarms (score >= {f['threshold']:g}, IoU >= {f['iou_threshold']:g})")
    if m.get("worst_images"):
        lines.append(f"worst      the {m['worst_images']} images with the most errors: worst.png")
    if m.get("note"):
        lines.append(f"note: {m['note']}")
    return lines
