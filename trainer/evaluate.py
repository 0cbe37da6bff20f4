"""`trainer evaluate` for the one-box detector: a run on one split of a TFDIR -> `metrics.json` +
`pr_curve.png` (the detection entry's `evaluate` in `trainer.tasks`, which picks a run's entry)."""

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


def predict_split(model, tfdir: Path, split: str, *, image_size: int, batch_size: int = 32) -> dict:
    """Run the model over a split. Returns arrays: `scores` (n,), `pred` (n, 4) normalized xyxy
    (corners ordered), `gt` list of (k_i, 4) normalized, `sizes` (n, 2) width/height, `ids`."""
    import tensorflow as tf

    ds = tdata.make_dataset(tfdir, split, image_size=image_size, batch_size=batch_size, with_meta=True)
    scores, preds, gts, sizes, ids = [], [], [], [], []
    try:
        for images, _, meta in ds:
            out = model.predict_on_batch(images)  # a traced predict step, not eager calls
            scores.append(np.asarray(out["presence"]).reshape(-1))
            preds.append(M.order_corners(np.asarray(out["box"])))
            for b in meta["boxes"]:
                gts.append(np.asarray(b).reshape(-1, 4))
            sizes.append(np.stack([np.asarray(meta["width"]), np.asarray(meta["height"])], axis=1))
            ids.extend(s.decode("utf-8", "replace") for s in np.asarray(meta["source_id"]))
    except tf.errors.OpError as e:
        raise DatatoolError(f"{tfdir}: {split} shards: cannot read records ({e.message.splitlines()[0]})") from e
    if not ids:
        raise DatatoolError(f"{tfdir}: the {split} split is empty")
    return {"scores": np.concatenate(scores), "pred": np.concatenate(preds), "gt": gts,
            "sizes": np.concatenate(sizes).astype(np.float64), "ids": ids}


def compute_metrics(pred: dict, *, iou: float = 0.5, threshold: float = 0.5) -> dict:
    """All detection metrics from `predict_split`'s output (boxes scaled to pixels first)."""
    scale = np.concatenate([pred["sizes"], pred["sizes"]], axis=1)
    gt_px = [g * scale[i] for i, g in enumerate(pred["gt"])]
    pred_px = pred["pred"] * scale
    has_face = np.array([len(g) > 0 for g in gt_px])
    found = pred["scores"] >= threshold
    out = {"images": len(gt_px), "images_with_faces": int(has_face.sum()),
           "presence": M.presence_metrics(has_face, pred["scores"], threshold=threshold),
           "localization": M.localization_metrics(gt_px, pred_px, found, iou_threshold=iou)}
    ap = M.coco_ap(gt_px, [p[None] for p in pred_px], [[s] for s in pred["scores"]])
    out["ap50"], out["ap50_95"] = ap["ap50"], ap["ap50_95"]
    multi = int(sum(len(g) > 1 for g in gt_px))
    faces = int(sum(len(g) for g in gt_px))
    if multi:
        out["note"] = ONE_BOX_NOTE.format(multi=multi, images=len(gt_px), cap=int(has_face.sum()) / faces)
    out["_pr50"] = ap["pr50"]
    return out


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
    metrics.pop("_pr50")
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
        f"AP         AP@0.5 {_fmt(m['ap50'])}  AP@[.5:.95] {_fmt(m['ap50_95'])}",
    ]
    if m.get("note"):
        lines.append(f"note: {m['note']}")
    return lines
