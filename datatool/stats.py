"""Summarise a dataset: images, faces per image, negatives, unlabeled, box sizes, aspects and
positions, image sizes, images per person. Pixels are of the image as displayed; "relative"
box sizes are the box side over the image side, positions are box centres in [0, 1].
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .dataset import list_people, load_dataset, refuse_rejected

PLOTS = ("faces_per_image.png", "box_size.png", "box_aspect.png", "box_centers.png", "image_sizes.png",
         "people.png")


def _describe(values) -> dict:
    """min / quartiles / max / mean of a list of numbers ({} when empty)."""
    import numpy as np

    if len(values) == 0:
        return {}
    a = np.asarray(values, dtype=np.float64)
    q = np.percentile(a, [0, 25, 50, 75, 100])
    return {"count": int(a.size), "min": float(q[0]), "p25": float(q[1]), "median": float(q[2]),
            "p75": float(q[3]), "max": float(q[4]), "mean": float(a.mean())}


def dataset_stats(root: Path, *, skip_errors: bool = False) -> dict:
    """Statistics of the dataset at `root` as a JSON-ready dict (raw value lists under `_values`).

    An annotated image whose labelme JSON has an error raises `RejectedImages` (it is neither a
    face image nor a negative), unless `skip_errors`: then it is left out and listed under
    `rejected`."""
    root = Path(root)
    ds = load_dataset(root)
    rejected = refuse_rejected(ds, skip_errors=skip_errors)
    labeled = ds.labeled
    faces_per_image = [len(s.boxes) for s in labeled]
    box_w, box_h, rel_w, rel_h, aspect, cx, cy, rel_side = [], [], [], [], [], [], [], []
    labels = Counter()
    for s in labeled:
        for b in s.boxes:
            labels[b.label] += 1
            box_w.append(b.width)
            box_h.append(b.height)
            rel_w.append(b.width / s.width)
            rel_h.append(b.height / s.height)
            rel_side.append((b.area / (s.width * s.height)) ** 0.5)
            if b.height > 0:
                aspect.append(b.width / b.height)
            cx.append((b.x_min + b.x_max) / 2 / s.width)
            cy.append((b.y_min + b.y_max) / 2 / s.height)
    sizes = Counter(f"{s.width}x{s.height}" for s in ds.samples)
    people = {name: len(imgs) for name, imgs in list_people(root).items()}
    severity = Counter(i.severity for i in ds.issues)
    return {
        "root": str(root),
        "images": len(ds.samples),
        "labeled": len(labeled),
        "unlabeled": len(ds.unlabeled),
        "negatives": sum(1 for s in labeled if not s.boxes),
        "faces": sum(faces_per_image),
        "faces_per_image": {str(k): v for k, v in sorted(Counter(faces_per_image).items())},
        "labels": dict(sorted(labels.items())),
        "groups": len({s.group for s in labeled if s.group}),
        "box_width_px": _describe(box_w),
        "box_height_px": _describe(box_h),
        "box_relative_size": _describe(rel_side),
        "box_aspect_w_over_h": _describe(aspect),
        "box_center_x": _describe(cx),
        "box_center_y": _describe(cy),
        "image_sizes": dict(sizes.most_common()),
        "image_width_px": _describe([s.width for s in ds.samples]),
        "image_height_px": _describe([s.height for s in ds.samples]),
        "people": people,
        "orphan_jsons": len(ds.orphan_jsons),
        "rejected": [str(p) for p in rejected],
        "issues": {k: severity.get(k, 0) for k in ("error", "warning", "info")},
        "_values": {"faces_per_image": faces_per_image, "box_relative_size": rel_side, "rel_w": rel_w,
                    "rel_h": rel_h, "aspect": aspect, "cx": cx, "cy": cy,
                    "image_wh": [(s.width, s.height) for s in ds.samples]},
    }


def public(stats: dict) -> dict:
    """The stats without the raw value lists (what `--json` writes)."""
    return {k: v for k, v in stats.items() if not k.startswith("_")}


def format_table(stats: dict) -> str:
    """A plain aligned text table for the terminal."""
    rows = [
        ("images", f"{stats['images']}  (labeled {stats['labeled']}, unlabeled {stats['unlabeled']})"),
        ("faces", f"{stats['faces']}  ({', '.join(f'{k}: {v}' for k, v in stats['labels'].items()) or 'none'})"),
        ("negatives", f"{stats['negatives']}  (labeled images with no face)"),
        ("faces per image", ", ".join(f"{k} face(s): {v}" for k, v in stats["faces_per_image"].items()) or "-"),
    ]
    if stats["groups"]:
        rows.append(("groups", f"{stats['groups']}  (originals the images derive from)"))

    def span(d, fmt="{:.0f}"):
        if not d:
            return "-"
        return " / ".join(fmt.format(d[k]) for k in ("min", "median", "max")) + "  (min / median / max)"

    rows += [
        ("box width px", span(stats["box_width_px"])),
        ("box height px", span(stats["box_height_px"])),
        ("box size rel.", span(stats["box_relative_size"], "{:.2f}")),
        ("box aspect w/h", span(stats["box_aspect_w_over_h"], "{:.2f}")),
        ("box centre x", span(stats["box_center_x"], "{:.2f}")),
        ("box centre y", span(stats["box_center_y"], "{:.2f}")),
    ]
    top = list(stats["image_sizes"].items())[:5]
    more = len(stats["image_sizes"]) - len(top)
    rows.append(("image sizes", ", ".join(f"{k}: {v}" for k, v in top) + (f", +{more} more" if more > 0 else "")
                 if top else "-"))
    if stats["people"]:
        rows.append(("people", ", ".join(f"{k}: {v}" for k, v in stats["people"].items())))
    issues = stats["issues"]
    if any(issues.values()) or stats["orphan_jsons"]:
        rows.append(("problems", f"{issues['error']} error(s), {issues['warning']} warning(s), "
                                 f"{stats['orphan_jsons']} JSON(s) without an image (run `datatool validate`)"))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


PLOT_NAMES = ("faces_per_image.png", "box_size.png", "box_aspect.png", "box_centers.png", "image_sizes.png", "people.png")  # what `save_plots` may write


def save_plots(stats: dict, out_dir: Path, *, overwrite: bool = True) -> list[Path]:
    """PNG histograms of the distributions into `out_dir` (matplotlib, Agg backend), named as in
    `PLOT_NAMES`; refuses (before drawing any) to replace one unless `overwrite`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .core.fsutil import atomic_path, refuse_existing

    out_dir = Path(out_dir)
    refuse_existing(*(out_dir / n for n in PLOT_NAMES), overwrite=overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    v = stats["_values"]
    written = []

    def save(fig, name):
        path = out_dir / name
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        written.append(path)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    counts = Counter(v["faces_per_image"])
    ax.bar([str(k) for k in sorted(counts)], [counts[k] for k in sorted(counts)], color="#2979ff")
    ax.set(title="Faces per image (0 = negative)", xlabel="faces", ylabel="images")
    save(fig, "faces_per_image.png")

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(v["box_relative_size"], bins=30, range=(0, 1), color="#00c853")
    ax.set(title="Box size: sqrt(box area / image area)", xlabel="relative size", ylabel="boxes")
    save(fig, "box_size.png")

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(v["aspect"], bins=30, color="#ff9100")
    ax.set(title="Box aspect (width / height)", xlabel="aspect", ylabel="boxes")
    save(fig, "box_aspect.png")

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    if v["cx"]:
        ax.hist2d(v["cx"], v["cy"], bins=20, range=[[0, 1], [0, 1]], cmap="viridis")
    ax.set(title="Box centres (image coordinates)", xlabel="x", ylabel="y", xlim=(0, 1), ylim=(1, 0))
    save(fig, "box_centers.png")

    fig, ax = plt.subplots(figsize=(5, 3.5))
    wh = v["image_wh"]
    if wh:
        sizes = Counter(wh)
        ax.scatter([w for w, _ in sizes], [h for _, h in sizes], s=[20 + 5 * c for c in sizes.values()],
                   color="#d500f9", alpha=0.6)
    ax.set(title="Image sizes (marker area = count)", xlabel="width px", ylabel="height px")
    save(fig, "image_sizes.png")

    if stats["people"]:
        fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(stats["people"])), 3.5))
        ax.bar(list(stats["people"]), list(stats["people"].values()), color="#00b8d4")
        ax.set(title="Images per person", ylabel="images")
        ax.tick_params(axis="x", rotation=45)
        save(fig, "people.png")
    return written
