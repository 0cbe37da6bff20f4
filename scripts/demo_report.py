"""Write the demo's report (Markdown and HTML) from what the demo run left in its folder.

Every number comes from the files the stages wrote (dataset.json records, validate.json,
metrics.json, history.csv, predictions.csv); nothing is typed in by hand.

    python scripts/demo_report.py demo_out
"""

from __future__ import annotations

import argparse
import csv
import html
import json
import sys
from pathlib import Path


def load(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def fmt(v, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def heldout_sheet(out: Path, heldout: Path, predictions_json: Path, threshold: float) -> tuple[Path | None, list[dict]]:
    """Held-out images with the true boxes (green) and every face the model found (orange, with
    its score), matched as `trainer evaluate` matches them (IoU >= 0.5, best score first)."""
    import numpy as np

    from datatool.dataset import load_dataset
    from datatool.core.draw import contact_sheet, draw_boxes, save_rgb
    from datatool.core.images import load_rgb
    from trainer.metrics import match_faces

    if not predictions_json.is_file():
        return None, []
    preds = {Path(row["source"]).name: row for row in json.loads(predictions_json.read_text(encoding="utf-8"))}
    tiles, titles, rows = [], [], []
    for s in load_dataset(heldout).labeled:
        p = preds.get(s.image_path.name)
        if p is None:
            continue
        found = p.get("detections") or []
        boxes = [tuple(d["box"]) for d in found]
        scores = [d["score"] for d in found]
        rgb = draw_boxes(load_rgb(s.image_path), s.boxes, color=(0, 200, 83), thickness=2)
        if boxes:
            rgb = draw_boxes(rgb, boxes, captions=[f"{v:.2f}" for v in scores], color=(255, 145, 0), thickness=2)
        truth = np.array([b.xyxy for b in s.boxes], float).reshape(-1, 4)
        m = match_faces(truth, np.array(boxes, float).reshape(-1, 4), np.array(scores, float),
                        iou_threshold=0.5, threshold=threshold)
        tiles.append(rgb)
        verdict = f"{len(m['hits'])}/{len(s.boxes)} found"
        if m["false_alarms"]:
            verdict += f", {len(m['false_alarms'])} false"
        titles.append(f"{s.image_path.name} {verdict}")
        rows.append({"image": s.image_path.name, "faces": len(s.boxes), "found": len(m["hits"]),
                     "false_alarms": len(m["false_alarms"])})
    if not tiles:
        return None, rows
    path = out / "report" / "heldout_predictions.png"
    save_rgb(path, contact_sheet(tiles, titles=titles, cell=220, cols=5))
    return path, rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="the demo's output folder (demo_out)")
    ap.add_argument("--heldout", type=Path, default=Path("datasets/sample/heldout"))
    ap.add_argument("--threshold", type=float, default=0.5)
    args = ap.parse_args(argv)
    out: Path = args.out
    rep = out / "report"
    rep.mkdir(parents=True, exist_ok=True)

    me = load(out / "me" / "dataset.json") or {}
    validate = load(rep / "validate.json") or {}
    aug = load(out / "augmented" / "dataset.json") or {}
    tf = load(out / "tfrecords" / "dataset.json") or {}
    run = out / "run"
    config = load(run / "config.json") or {}
    test_m = load(rep / "test" / "metrics.json") or {}
    held_m = load(rep / "heldout" / "metrics.json") or {}
    history = list(csv.DictReader(open(run / "history.csv"))) if (run / "history.csv").is_file() else []
    sheet, held_rows = heldout_sheet(out, args.heldout, out / "predictions" / "predictions.json", args.threshold)
    why_scratch = rep / "imagenet_unavailable.txt"

    md: list[str] = []
    add = md.append
    add("# facekit demo report\n")
    add("Everything below was produced by `make demo` on this machine from the bundled sample data "
        "(`datasets/sample`, real faces that scikit-image ships; see its README for sources and licences). "
        "All numbers are read from the files the stages wrote.\n")

    add("## Data\n")
    captures = me.get("captures") or []
    saved = sum(int(c.get("frames", 0) or 0) for c in captures) if captures else None
    counts = validate.get("summary") or {}
    add(f"- **capture**: {fmt(saved)} frames from the stand-in webcam clip (`--interval 0.5` of media time)")
    add(f"- **validate** (capture + WIDER sample + extra composites, merged): {fmt(counts.get('images'))} images, "
        f"{fmt(counts.get('faces'))} faces, {fmt(counts.get('negatives'))} negatives, "
        f"{fmt(counts.get('unlabeled'))} unlabeled; {fmt(counts.get('errors'))} errors, {fmt(counts.get('warnings'))} warnings")
    ac = aug.get("counts") or {}
    recipe = aug.get("recipe") or {}
    add(f"- **augment**: recipe `{recipe.get('name')}` (sha256 {str(recipe.get('sha256'))[:12]}), "
        f"factor {fmt(aug.get('factor'))}, seed {fmt(aug.get('seed'))}: {fmt(ac.get('variants'))} variants + {fmt(ac.get('originals'))} originals")
    audit = load(rep / "audit.json") or {}
    if (rep / "health.html").is_file():
        suspects = audit.get("suspects") or []
        add(f"- **health**: [the dataset health report](health.html) (near duplicates, image quality, leaks "
            f"across splits, label suspects); `audit --detector {audit.get('detector', '?')}` ranks "
            f"{len(suspects)} suspect box{'es' if len(suspects) != 1 else ''} in {fmt(audit.get('images'))} images")
    add("- **split** (no group or capture session crosses splits):\n")
    add("| split | images | faces | negatives | groups |")
    add("|---|---|---|---|---|")
    for name, c in (tf.get("counts") or {}).items():
        add(f"| {name} | {c.get('images')} | {c.get('faces')} | {c.get('negatives')} | {c.get('groups')} |")
    add("")
    for title, pic in (("The merged dataset (labelme boxes)", "dataset.png"),
                       ("Augmented variants", "augmented.png"),
                       ("What the trainer sees: records decoded from the TFRecords", "tfrecords.png")):
        if (rep / pic).is_file():
            add(f"**{title}**\n\n![{title}]({pic})\n")

    add("## Training\n")
    if config:
        fit = config.get("fit") or {}
        best = None
        if history:
            best = min(history, key=lambda r: float(r.get("val_loss", "inf") or "inf"))
        add(f"`{config.get('command', 'trainer fit')}`\n")
        add(f"- backbone {config.get('backbone')} (alpha {config.get('alpha')}) at {config.get('image_size')} px, "
            f"weights `{config.get('weights')}`, {len(history)} of {fit.get('epochs')} epochs run"
            f"{' (early stopping)' if len(history) < int(fit.get('epochs') or 0) else ''}, batch {fit.get('batch_size')}")
        add(f"- head `{config.get('head', 'single')}`"
            + (": a face score and a box for every cell of the stride-8 and stride-16 feature maps, then "
               "non-maximum suppression, so it finds every face" if config.get("head") == "dense" else
               ": face presence and one box (the tutorials' model)"))
        if best:
            iou = best.get("val_iou") or best.get("val_box_iou") or "nan"
            add(f"- best epoch {int(best['epoch']) + 1}: val loss {fmt(float(best['val_loss']))}, "
                f"val box IoU {fmt(float(iou))}")
        if config.get("weights") == "none":
            reason = why_scratch.read_text(encoding="utf-8").strip() if why_scratch.is_file() else ""
            add("- **Trained from scratch**: the demo tried ImageNet weights first"
                + (f" and could not get them ({reason})" if reason else "")
                + ", so the backbone starts from random weights. With internet the demo takes the "
                "transfer-learning path the seed projects use (`--weights imagenet`, the default), which needs "
                "far fewer images; see the README.")
        add("")
        if (run / "curves.png").is_file():
            add("![training curves](../run/curves.png)\n")

    add("## Evaluation\n")
    if test_m or held_m:
        add("| | images | faces | found (score >= 0.5, IoU >= 0.5) | false alarms | AP@0.5 | AP@[.5:.95] | "
            "AP@0.5 small / medium / large | presence AUC |")
        add("|---|---|---|---|---|---|---|---|---|")
        for label, m in (("test split (augmented variants of unseen originals)", test_m),
                         ("held-out photos (faces never seen in training)", held_m)):
            if not m:
                continue
            p, f = m.get("presence") or {}, m.get("faces_found") or {}
            add(f"| {label} | {m.get('images')} | {fmt(m.get('faces'))} | {fmt(f.get('found'))} | "
                f"{fmt(f.get('false_alarms'))} | {fmt(m.get('ap50'))} | {fmt(m.get('ap50_95'))} | "
                f"{fmt(m.get('ap50_small'))} / {fmt(m.get('ap50_medium'))} / {fmt(m.get('ap50_large'))} | "
                f"{fmt(p.get('auc'))} |")
        add("\nSizes are COCO's area ranges in the model's input pixels (small < 32², large > 96²); -: no face "
            "of that size.\n")
        for m in (test_m, held_m):
            if m.get("note"):
                add(f"Note: {m['note']}.\n")
                break
        for label, pic in (("test", "test/pr_curve.png"), ("held-out", "heldout/pr_curve.png")):
            if (rep / pic).is_file():
                add(f"**Precision-recall, {label}**\n\n![PR {label}]({pic})\n")
        for label, pic in (("test", "test/worst.png"), ("held-out", "heldout/worst.png")):
            if (rep / pic).is_file():
                add(f"**The worst {label} images** (green: found, red: missed, orange: false alarm)\n\n"
                    f"![worst {label}]({pic})\n")
    if sheet is not None:
        add("## Predictions on held-out photos\n")
        add("Green: the true boxes. Orange: every face the model found, with its score (at least "
            f"{args.threshold}).\n")
        add("![held-out predictions](heldout_predictions.png)\n")
    add("## Where things are\n")
    add(f"- datasets: `{out}/me` (capture), `{out}/dataset` (merged), `{out}/augmented`, TFRecords `{out}/tfrecords`")
    add(f"- run: `{out}/run` (model.keras, history.csv, curves.png, config.json, TensorBoard logs)")
    add(f"- predictions: `{out}/predictions` (annotated copies, predictions.csv/json)")

    text = "\n".join(md) + "\n"
    (rep / "report.md").write_text(text, encoding="utf-8")
    (rep / "report.html").write_text(to_html(text), encoding="utf-8")
    print(f"report: {rep / 'report.md'} and {rep / 'report.html'}")
    return 0


def to_html(markdown: str) -> str:
    """Just enough Markdown for this report: headings, lists, tables, images, bold, code."""
    import re

    def inline(s: str) -> str:
        s = html.escape(s)
        s = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", r'<img alt="\1" src="\2" style="max-width:100%">', s)
        s = re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="\2">\1</a>', s)
        s = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", s)
        return re.sub(r"`([^`]+)`", r"<code>\1</code>", s)

    body, in_list, in_table = [], False, False
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if all(set(c) <= set("-") for c in cells):
                continue
            if not in_table:
                body.append("<table border=1 cellpadding=4 style='border-collapse:collapse'>")
                in_table = True
            body.append("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("- "):
            if not in_list:
                body.append("<ul>")
                in_list = True
            body.append(f"<li>{inline(line[2:])}</li>")
            continue
        if in_list:
            body.append("</ul>")
            in_list = False
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{inline(line[level:].strip())}</h{level}>")
        elif line.strip():
            body.append(f"<p>{inline(line)}</p>")
    if in_list:
        body.append("</ul>")
    if in_table:
        body.append("</table>")
    return ("<!doctype html><meta charset=utf-8><title>facekit demo report</title>"
            "<body style='font-family:sans-serif;max-width:1100px;margin:auto'>" + "\n".join(body) + "</body>\n")


if __name__ == "__main__":
    sys.exit(main())
