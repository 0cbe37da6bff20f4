"""`report`: one self-contained HTML page on a dataset's health, to read before training.

Sections: counts and stats plots; every issue (from loading the dataset, image quality,
near duplicates, and - with `validation=` - every issue of a `validate --json` file), each
with a link to its image; near-duplicate clusters; a gallery of thumbnails with their boxes,
filterable by issue; with `tfdir=`, the split table (from `split.csv`) and its leaks (val/test
records that are near duplicates of train records, found on the images in the TFRecords);
with `audit=`, the audit suspects.

The page works offline from a single file: thumbnails and plots are embedded as data URIs
(JPEG/PNG, base64), the style and the filter script are inline, nothing is fetched. Links to
the full images are relative to the page, so they work while the page stays beside the
dataset. The gallery shows at most `max_gallery` images, those with issues first. A small
script marks images that fail to load (`#image-check`), which the browser test reads.
The file is written atomically (temp name, then rename).
"""

from __future__ import annotations

import base64
import html
import os
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

from .core.errors import DatatoolError, ImageError, OutputExistsError
from .core.issues import Issue
from .core.neardup import DEFAULT_DISTANCE, check_distance
from .dataset import images_dir, load_dataset

SECTIONS = ("counts", "issues", "near-duplicates", "gallery", "split", "audit")
THUMB = 200  # px, long side of a gallery thumbnail
SUSPECT_THUMBS = 100  # suspects shown with a picture; the rest as table rows
CLUSTER_THUMBS = 8  # pictures per near-duplicate cluster


@dataclass
class ReportSummary:
    """What `build_report` wrote: the page and the counts shown at its top."""

    path: Path
    images: int = 0
    issues: int = 0
    clusters: int = 0
    leaks: int | None = None  # None without a TFDIR
    suspects: int | None = None  # None without an audit file
    skipped: list[Issue] = field(default_factory=list)  # unreadable images and records


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _thumb(path: Path, boxes=(), *, side: int = THUMB, color=None) -> str | None:
    """A JPEG data URI of the image shrunk to `side` with `boxes` (pixels of the full image) drawn;
    None if the image does not decode."""
    import cv2

    from .core.draw import draw_boxes
    from .core.images import load_rgb

    try:
        rgb = load_rgb(path)
    except ImageError:
        return None
    h, w = rgb.shape[:2]
    f = min(1.0, side / max(h, w))
    small = cv2.resize(rgb, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    if boxes:
        small = draw_boxes(small, [tuple(v * f for v in (b.xyxy if hasattr(b, "xyxy") else b)) for b in boxes],
                           thickness=2, color=color)
    return _data_uri(cv2.imencode(".jpg", small[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes(),
                     "image/jpeg")


def _href(target: Path, page_dir: Path) -> str:
    """A link from the page to a file: relative when possible (the page may be moved with its data)."""
    target = Path(target).resolve()
    try:
        rel = os.path.relpath(target, page_dir.resolve())
    except ValueError:  # another drive (Windows)
        return target.as_uri()
    return quote(Path(rel).as_posix())


def _plots(samples, table, thresholds) -> str:
    """The stats plots as one PNG data URI: faces per image, face sizes, luminance, sharpness."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.2), dpi=80)
    labeled = [s for s in samples if s.labeled]
    counts = np.bincount([len(s.boxes) for s in labeled]) if labeled else np.zeros(1, int)
    axes[0].bar(range(len(counts)), counts, color="#2979ff")
    axes[0].set(title="faces per labeled image", xlabel="faces", ylabel="images")
    sides = [min(b.width, b.height) for s in labeled for b in s.boxes]
    axes[1].hist(sides or [0], bins=30, color="#00c853")
    axes[1].set(title="face size (short side)", xlabel="px", ylabel="faces")
    if len(table):
        axes[2].hist(table["mean"], bins=32, range=(0, 255), color="#ff9100")
        axes[3].hist(np.log10(table["blur"].astype(float) + 1), bins=30, color="#d500f9")
        axes[3].axvline(np.log10(thresholds.blur + 1), color="k", ls="--", label=f"--blur {thresholds.blur:g}")
        axes[3].legend(loc="upper right", fontsize=8)
    axes[2].set(title="mean luminance", xlabel="0-255", ylabel="images")
    axes[3].set(title="sharpness", xlabel="log10(variance of Laplacian + 1)", ylabel="images")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return _data_uri(buf.getvalue(), "image/png")


def _read_validation(path: Path) -> list[Issue]:
    """The issues of a `datatool validate --json` file."""
    import json

    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        return [Issue(**{k: d[k] for k in ("severity", "file", "field", "message", "code", "fixable") if k in d})
                for d in doc["issues"]]
    except FileNotFoundError as e:
        raise DatatoolError(f"{path}: validation file not found") from e
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatatoolError(f"{path}: issues: not a `datatool validate --json` report ({type(e).__name__}: {e})") from e


def _split_table(tfdir: Path):
    """Counts per split from `TFDIR/split.csv` (pandas), or None when there is no such file."""
    import pandas as pd

    path = Path(tfdir) / "split.csv"
    if not path.is_file():
        return None
    try:
        df = pd.read_csv(path, dtype={"image_id": str, "split": str, "group": str, "session": str})
    except (OSError, ValueError) as e:
        raise DatatoolError(f"{path}: cannot read the split table ({e})") from e
    if "split" not in df or "faces" not in df:
        raise DatatoolError(f"{path}: expected columns image_id, split, group, faces (a `datatool split` output)")
    g = df.groupby("split", sort=False)
    out = pd.DataFrame({"images": g.size(), "faces": g["faces"].sum(),
                        "negatives": g["faces"].apply(lambda f: int((f == 0).sum())),
                        "groups": g["group"].nunique() if "group" in df else 0})
    order = [s for s in ("train", "val", "test") if s in out.index] + [s for s in out.index if s not in ("train", "val", "test")]
    return out.loc[order]


CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 2em 3em;color:#222;background:#fafafa}
h1{margin-top:.6em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
nav a{margin-right:1em} table{border-collapse:collapse;margin:.5em 0;background:#fff}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0} .error{color:#c62828;font-weight:600} .warning{color:#ef6c00} .info{color:#546e7a}
.cards{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start} img.plots{max-width:100%} figure.card{margin:0;background:#fff;border:1px solid #ddd;
padding:4px;width:212px} figure.card img{display:block;max-width:200px;max-height:200px;margin:auto}
figcaption{font-size:12px;word-break:break-all} .badge{display:inline-block;background:#eceff1;border-radius:3px;
padding:0 4px;margin:1px;font-size:11px} .cluster{background:#fff;border:1px solid #ddd;margin:8px 0;padding:6px}
.cluster img{height:110px;margin:2px} .muted{color:#777} #image-check{font-size:12px;color:#777}
img.small{max-height:110px}
"""

SCRIPT = """
function filterGallery(code){
  document.querySelectorAll('#gallery figure.card').forEach(function(c){
    var codes=(c.dataset.codes||'').split(' ');
    c.style.display=(code==='all'||(code==='none'&&c.dataset.codes==='')||codes.indexOf(code)>=0)?'':'none';
  });
}
window.addEventListener('load',function(){
  var imgs=document.images,broken=[];
  for(var i=0;i<imgs.length;i++){if(!imgs[i].complete||imgs[i].naturalWidth===0){broken.push(imgs[i].alt||('#'+i));}}
  var el=document.getElementById('image-check');
  el.dataset.total=imgs.length;el.dataset.broken=broken.length;el.dataset.state='done';
  el.textContent=broken.length?(broken.length+' of '+imgs.length+' images failed to load: '+broken.join(', '))
                              :('all '+imgs.length+' images loaded');
});
"""


def build_report(root: Path, *, out: Path, tfdir: Path | None = None, audit: Path | None = None,
                 validation: Path | None = None, distance: int = DEFAULT_DISTANCE, thresholds=None,
                 max_gallery: int = 400, workers: int | None = None, overwrite: bool = False,
                 progress: bool = False) -> ReportSummary:
    """Measure the dataset under `root` and write the HTML page `out` (see module doc).

    Unreadable images and records are reported by name in the page and in `skipped`; the rest of
    the page is still written. An empty dataset is a `DatatoolError`.
    """
    import pandas as pd

    from .core.neardup import near_duplicate_clusters, near_duplicate_issues, tfrecord_leaks
    from .core.quality import QualityThresholds, quality_issues, scan
    from .core.suspects import read_suspects

    check_distance(distance)
    out = Path(out)
    thresholds = thresholds or QualityThresholds()
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out}: already exists (use --overwrite to replace it)")
    if out.suffix.lower() not in (".html", ".htm"):
        raise DatatoolError(f"{out}: --out: expected an .html file name")
    ds = load_dataset(root)
    if not ds.samples and not ds.issues:
        raise DatatoolError(f"{root}: no images found (a dataset is a folder with images/ inside)")
    header, suspects = read_suspects(audit) if audit is not None else ({}, None)
    extra = _read_validation(validation) if validation is not None else []

    samples = ds.samples
    table, bad = scan([s.image_path for s in samples], workers=workers, progress=progress)
    issues: list[Issue] = list(ds.issues) + bad
    issues += [Issue("warning", str(j), "", "JSON with no image beside it", "orphan-json") for j in ds.orphan_jsons]
    issues += quality_issues(table, thresholds)
    hashes = dict(zip(table.index, table["phash"]))
    clusters = near_duplicate_clusters(hashes, distance)
    base = images_dir(root).resolve()
    issues += near_duplicate_issues(hashes, distance, relative_to=base)
    seen = {(i.file, i.code, i.message) for i in issues}
    issues += [i for i in extra if (i.file, i.code, i.message) not in seen]
    issues.sort(key=lambda i: (("error", "warning", "info").index(i.severity), i.code, i.file))
    skipped = [i for i in ds.issues if i.code == "bad-image"] + list(bad)

    leaks, split_counts, leak_thumbs = None, None, {}
    if tfdir is not None:
        split_counts = _split_table(tfdir)
        rec_issues: list[Issue] = []
        leaks = tfrecord_leaks(tfdir, distance, issues=rec_issues, thumbnails=leak_thumbs)
        skipped += rec_issues
        issues += rec_issues

    page_dir = out.parent if str(out.parent) else Path(".")
    by_file: dict[str, list[Issue]] = defaultdict(list)
    for i in issues:
        by_file[str(Path(i.file))].append(i)
    for c in clusters:  # every member of a cluster carries the code, not only the first
        for k in c.keys[1:]:
            by_file[str(Path(k))].append(Issue("warning", k, "", "near duplicate", "near-duplicate"))
    sample_by_path = {str(s.image_path): s for s in samples}
    sample_by_id = {s.image_id: s for s in samples}

    def link(path) -> str:
        return f'<a href="{_href(Path(path), page_dir)}">{_esc(_label(path))}</a>'

    def _label(path) -> str:
        """A file as the page names it: relative to the images folder when inside it."""
        p = Path(path)
        try:
            return p.resolve().relative_to(base).as_posix()
        except ValueError:
            return str(p)

    def img(uri: str | None, alt: str, cls: str = "") -> str:
        if uri is None:
            return f'<span class="muted">({_esc(alt)}: unreadable)</span>'
        return f'<img src="{uri}" alt="{_esc(alt)}"{f" class={cls!r}" if cls else ""}>'

    parts: list[str] = []
    # --- counts and plots
    labeled = ds.labeled
    counts = pd.DataFrame({"count": {
        "images": len(samples), "labeled": len(labeled), "negatives": sum(1 for s in labeled if not s.boxes),
        "unlabeled": len(ds.unlabeled), "faces": sum(len(s.boxes) for s in labeled),
        "unreadable images": len(bad), "errors": sum(i.severity == "error" for i in issues),
        "warnings": sum(i.severity == "warning" for i in issues),
        "near-duplicate clusters": len(clusters)}})
    per_code = pd.Series([i.code or "-" for i in issues], dtype=object).value_counts().rename("images").to_frame()
    parts.append('<section id="counts"><h2>Counts and statistics</h2><div class="cards">'
                 + counts.to_html(border=0) + (per_code.to_html(border=0) if len(per_code) else "") + "</div>"
                 + img(_plots(samples, table, thresholds), "statistics plots", "plots") + "</section>")
    # --- issues
    rows = "".join(f'<tr><td class="{i.severity}">{i.severity}</td><td>{_esc(i.code)}</td><td>{link(i.file)}</td>'
                   f"<td>{_esc(i.field)}</td><td>{_esc(i.message)}</td></tr>" for i in issues)
    parts.append(f'<section id="issues"><h2>Issues ({len(issues)})</h2>'
                 + (f"<table><tr><th>severity</th><th>kind</th><th>file</th><th>field</th><th>message</th></tr>{rows}"
                    "</table>" if issues else "<p>No issue found.</p>") + "</section>")
    # --- near duplicates
    blocks = []
    for k, c in enumerate(clusters):
        pics = "".join(img(_thumb(Path(f), side=THUMB), _label(f), "small") for f in c.keys[:CLUSTER_THUMBS])
        more = f' <span class="muted">+{len(c.keys) - CLUSTER_THUMBS} more</span>' if len(c.keys) > CLUSTER_THUMBS else ""
        names = ", ".join(link(f) for f in c.keys)
        blocks.append(f'<div class="cluster"><b>cluster {k + 1}</b>: {len(c.keys)} images, neighbours within '
                      f"{c.max_distance} bits<br>{pics}{more}<br>{names}</div>")
    parts.append(f'<section id="near-duplicates"><h2>Near-duplicate clusters ({len(clusters)})</h2>'
                 f'<p class="muted">64-bit perceptual hashes (phash) within {distance} bits '
                 "(--near-dup-distance).</p>" + ("".join(blocks) or "<p>None.</p>") + "</section>")
    # --- gallery
    flagged = [s for s in samples if str(s.image_path) in by_file]
    shown = (flagged + [s for s in samples if str(s.image_path) not in by_file])[:max_gallery]
    codes_all = sorted({i.code for s in shown for i in by_file.get(str(s.image_path), []) if i.code})
    cards = []
    for s in shown:
        codes = sorted({i.code for i in by_file.get(str(s.image_path), []) if i.code})
        badges = "".join(f'<span class="badge">{_esc(c)}</span>' for c in codes)
        cards.append(f'<figure class="card" data-codes="{_esc(" ".join(codes))}">'
                     f"{img(_thumb(s.image_path, s.boxes), s.image_id)}<figcaption>{link(s.image_path)} "
                     f"{len(s.boxes)} box{'es' if len(s.boxes) != 1 else ''}{'' if s.labeled else ' (unlabeled)'}"
                     f"<br>{badges}</figcaption></figure>")
    options = "".join(f'<option value="{_esc(c)}">{_esc(c)}</option>' for c in codes_all)
    hidden = len(samples) - len(shown)
    parts.append(f'<section id="gallery"><h2>Gallery ({len(shown)} of {len(samples)} images)</h2>'
                 '<p>Show: <select id="gallery-filter" onchange="filterGallery(this.value)">'
                 f'<option value="all">all</option><option value="none">no issue</option>{options}</select>'
                 + (f' <span class="muted">({hidden} images without issues not shown; --max-gallery)</span>'
                    if hidden else "") + '</p><div class="cards">' + "".join(cards) + "</div></section>")
    # --- split and leaks
    if tfdir is None:
        body = '<p class="muted">No TFDIR given (--tfdir).</p>'
    else:
        body = (split_counts.to_html(border=0) if split_counts is not None
                else f'<p class="muted">{_esc(tfdir)}: no split.csv.</p>')
        if leaks:
            lrows = []
            for lk in leaks:
                pic = lambda split, key: img(_data_uri(leak_thumbs[(split, key)], "image/jpeg"), f"{split}:{key}",
                                             "small") if (split, key) in leak_thumbs else ""
                lrows.append(f"<tr><td>{_esc(lk.split)}</td><td>{_esc(lk.key)}<br>{pic(lk.split, lk.key)}</td>"
                             f"<td>{_esc(lk.train_key)}<br>{pic('train', lk.train_key)}</td><td>{lk.distance}</td></tr>")
            body += (f"<h3>Leaks ({len(leaks)})</h3><p>Val/test records whose image is a near duplicate of a "
                     "train record (different groups or sessions included):</p><table><tr><th>split</th>"
                     "<th>record</th><th>closest train record</th><th>bits</th></tr>" + "".join(lrows) + "</table>")
        else:
            body += "<h3>Leaks (0)</h3><p>No val/test record is a near duplicate of a train record.</p>"
    parts.append(f'<section id="split"><h2>Split</h2>{body}</section>')
    # --- audit
    if suspects is None:
        body = '<p class="muted">No audit file given (--audit; write one with `datatool audit --json`).</p>'
    else:
        srows = []
        for k, sp in enumerate(suspects):
            s = sample_by_path.get(sp.image) or sample_by_id.get(sp.image_id)
            pic = ""
            if k < SUSPECT_THUMBS:
                pic = img(_thumb(Path(sp.image), [sp.box], color=(230, 30, 30)), f"suspect {k + 1}", "small")
            srows.append(f"<tr><td>{k + 1}</td><td>{pic}</td><td>{link(sp.image)}</td><td>{_esc(sp.reason)}</td>"
                         f"<td>{sp.score:.2f}</td><td>{_esc(sp.message)}"
                         f"{'' if s else ' <span class=muted>(not in this dataset)</span>'}</td></tr>")
        body = (f"<p>Detector {_esc(header.get('detector', '?'))} on {_esc(header.get('images', '?'))} images; "
                "most suspicious first. Red: the box in question.</p>"
                + ("<table><tr><th>#</th><th></th><th>image</th><th>reason</th><th>score</th><th>why</th></tr>"
                   + "".join(srows) + "</table>" if srows else "<p>No suspect.</p>"))
    parts.append(f'<section id="audit"><h2>Audit suspects{f" ({len(suspects)})" if suspects is not None else ""}'
                 f"</h2>{body}</section>")

    nav = "".join(f'<a href="#{s}">{s}</a>' for s in SECTIONS)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Dataset health: '
            f"{_esc(Path(root).name)}</title><style>{CSS}</style></head><body>"
            f"<h1>Dataset health: {_esc(root)}</h1><p class='muted'>{when}</p><nav>{nav}</nav>"
            f'<p id="image-check" data-state="pending"></p>' + "".join(parts)
            + f"<script>{SCRIPT}</script></body></html>\n")
    from .core.fsutil import write_text_atomic

    write_text_atomic(out, page, overwrite=True)
    return ReportSummary(path=out, images=len(samples), issues=len(issues), clusters=len(clusters),
                         leaks=None if leaks is None else len(leaks),
                         suspects=None if suspects is None else len(suspects), skipped=skipped)
