"""Dataset health: `datatool audit` (likely label mistakes) and `datatool report` (one HTML page)."""

from __future__ import annotations

from pathlib import Path

import click

from . import cli
from ._common import OVERWRITE, detector_option, workers_option


def _refuse_existing(*paths, overwrite: bool) -> None:
    from ..core.fsutil import refuse_existing

    refuse_existing(*paths, overwrite=overwrite)


@cli.command("audit")
@click.argument("dataset", type=click.Path(path_type=Path))
@detector_option()
@click.option("--iou", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
              help="A human box whose best IoU with a detection is below this is loose or misplaced.")
@click.option("--min-confidence", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="A detection no box covers is a missed face only from this confidence (0-1; Haar "
                   "weights are mapped to 0-1, see `datatool.audit`).")
@click.option("--json", "json_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write the suspects, most suspicious first (image, box, reason, score), as JSON: "
                   "the input of `report --audit` and `label --only-suspects`.")
@click.option("--grid", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Draw the top suspects, box in red, on one sheet (PNG/JPEG).")
@click.option("--top", type=click.IntRange(min=1), default=24, show_default=True,
              help="Suspects drawn on --grid.")
@click.option("--max-rows", type=click.IntRange(min=0), default=30, show_default=True,
              help="Rows of the printed table; --json has them all.")
@OVERWRITE
def audit_cmd(dataset, detector, iou, min_confidence, json_path, grid, top, max_rows, overwrite):
    """Compare the human boxes with a face detector's and rank likely label mistakes:
    missed faces (the detector is confident and no box covers it), loose or misplaced boxes
    (best IoU below --iou) and boxes with no face near them.

    \b
    Example:
      datatool audit datasets/me --detector mtcnn --json audit.json --grid suspects.jpg
      datatool label datasets/me --only-suspects audit.json
    """
    import pandas as pd

    from ..audit import audit, suspects_sheet
    from ..core.fsutil import write_json_atomic

    _refuse_existing(json_path, grid, overwrite=overwrite)
    result = audit(dataset, detector=detector, iou=iou, min_confidence=min_confidence, progress=True)
    for issue in result.issues:
        click.secho(f"skipped: {issue}", fg="yellow", err=True)
    table = result.table()
    if len(table):
        with pd.option_context("display.max_colwidth", 60, "display.width", 200):
            click.echo(table.head(max_rows).to_string(index=False))
        if len(table) > max_rows:
            click.echo(f"... {len(table) - max_rows} more (--json lists them all)")
    if json_path is not None:
        write_json_atomic(json_path, result.to_dict())
        click.echo(f"Suspects written to {json_path}")
    if grid is not None:
        drawn = suspects_sheet(result, grid, top=top)
        click.echo(f"{drawn} suspects drawn to {grid}" if drawn else f"No suspect to draw; {grid} not written")
    n, k = result.images, len(result.suspects)
    by = table["reason"].value_counts().to_dict() if k else {}
    detail = f" ({', '.join(f'{v} {r}' for r, v in by.items())})" if by else ""
    skipped = f"; {result.unlabeled} unlabeled skipped" if result.unlabeled else ""
    click.echo(f"{k} suspect{'s' if k != 1 else ''} in {n} image{'s' if n != 1 else ''}{detail}, "
               f"detector {result.detector}{skipped}")


def near_dup_option(f):
    """`--near-dup-distance BITS` (report, validate, inspect, split share it)."""
    from ..core.neardup import DEFAULT_DISTANCE, MAX_DISTANCE

    return click.option("--near-dup-distance", "near_dup_distance", type=int, default=DEFAULT_DISTANCE,
                        show_default=True, metavar="BITS",
                        help=f"Images whose 64-bit perceptual hashes differ in at most this many bits "
                             f"(0-{MAX_DISTANCE}) are near duplicates.")(f)


def quality_options(f):
    """The image-quality threshold options; the command gets them as `quality=QualityThresholds`."""
    import functools

    from ..core.quality import QualityThresholds

    d = QualityThresholds()
    opts = [
        ("--blur", "blur", float, "Blurry below this variance of the Laplacian (at 256 px)."),
        ("--dark", "dark", float, "Too dark when the 95th luminance percentile is below this (0-255)."),
        ("--bright", "bright", float, "Too bright when the 5th luminance percentile is above this (0-255)."),
        ("--min-entropy", "min_entropy", float, "Low information below this entropy (bits, 0-8)."),
        ("--max-aspect", "max_aspect", float, "Extreme aspect ratio above this long/short side ratio."),
        ("--min-side", "min_side", int, "Very small when the short side is below this (px)."),
        ("--small-fraction", "small_fraction", float,
         "Very small when sqrt(area) is below this fraction of the dataset's median."),
    ]

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        kwargs["quality"] = QualityThresholds(**{name: kwargs.pop(name) for _, name, _, _ in opts})
        return f(*args, **kwargs)

    for flag, name, typ, text in reversed(opts):
        wrapper = click.option(flag, name, type=typ, default=getattr(d, name), show_default=True, help=text)(wrapper)
    return wrapper


@cli.command("report")
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="The HTML file to write (one self-contained page).")
@click.option("--tfdir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="A `datatool split` output: adds the split table and its near-duplicate leaks.")
@click.option("--audit", "audit_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="A `datatool audit --json` file: adds the suspects.")
@click.option("--validation", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="A `datatool validate --json` file: adds every issue it lists.")
@near_dup_option
@quality_options
@click.option("--max-gallery", type=click.IntRange(min=0), default=400, show_default=True,
              help="Images in the gallery (those with issues first).")
@workers_option("Threads decoding images.")
@OVERWRITE
def report_cmd(dataset, out, tfdir, audit_path, validation, near_dup_distance, quality, max_gallery, workers,
               overwrite):
    """Write one offline HTML page on DATASET's health: counts and plots, every issue with a link
    to its image, near-duplicate clusters, a gallery with boxes filterable by issue, the split
    table and its leaks (--tfdir), the audit suspects (--audit).

    \b
    Example:
      datatool audit datasets/me --json reports/audit.json
      datatool report datasets/me --tfdir datasets/me-tf --audit reports/audit.json --out reports/me.html
    """
    from ..report import build_report

    summary = build_report(dataset, out=out, tfdir=tfdir, audit=audit_path, validation=validation,
                           distance=near_dup_distance, thresholds=quality, max_gallery=max_gallery,
                           workers=workers, overwrite=overwrite, progress=True)
    for issue in summary.skipped:
        click.secho(f"skipped: {issue}", fg="yellow", err=True)
    extra = []
    if summary.leaks is not None:
        extra.append(f"{summary.leaks} leak{'s' if summary.leaks != 1 else ''}")
    if summary.suspects is not None:
        extra.append(f"{summary.suspects} suspect{'s' if summary.suspects != 1 else ''}")
    click.echo(f"Report written to {summary.path}: {summary.images} images, {summary.issues} issues, "
               f"{summary.clusters} near-duplicate clusters" + "".join(f", {e}" for e in extra))
