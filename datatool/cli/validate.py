"""`datatool validate`: every problem in a dataset in one table; exit 1 if any is an error."""

from __future__ import annotations

from pathlib import Path

import click

from ..dataset import FORMATS
from . import cli
from ._common import OVERWRITE, print_issue_table, workers_option
from .health import near_dup_option, quality_options

FORMAT_CHOICES = list(FORMATS)
PER_CODE = 5  # table rows per kind of issue before the rest are folded into one line


def _condense(issues, *, per_code: int):
    """The first `per_code` issues of each kind, then one row saying how many more (order kept)."""
    from collections import Counter

    from ..core.issues import Issue

    total = Counter((i.severity, i.code) for i in issues)
    seen: Counter = Counter()
    rows = []
    for i in issues:
        key = (i.severity, i.code)
        seen[key] += 1
        if seen[key] <= per_code:
            rows.append(i)
        if seen[key] == per_code and total[key] > per_code:
            rows.append(Issue(i.severity, "...", "", f"{total[key] - per_code} more '{i.code}' like the above "
                              "(--json lists them all)", i.code))
    return rows


@cli.command()
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(FORMAT_CHOICES), default="labelme", show_default=True,
              help="Annotation format of DATASET; other than labelme, DATASET is what that format's reader "
                   "takes (a WIDER gt txt, a COCO JSON, ...).")
@click.option("--images", type=click.Path(path_type=Path), default=None,
              help="Images folder for formats that keep it apart (the WIDER images tree).")
@click.option("--labels", default=None, metavar="LABEL[,LABEL]",
              help="Allowed box labels, comma separated; any other label is an error.")
@click.option("--min-face", type=click.FloatRange(min=0), default=10, show_default=True, metavar="PX",
              help="Warn about faces narrower or shorter than this many pixels (0: off).")
@click.option("--fix", is_flag=True,
              help="Apply safe fixes to labelme JSONs (order corners, clip to the image, correct "
                   "imageWidth/imageHeight and imagePath); each changed file is kept as NAME.json.bak.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Also write the full report (every issue, the counts) to this JSON file.")
@click.option("--grid", type=click.Path(path_type=Path), default=None,
              help="Draw the images with problems, their boxes and first issue, on one sheet (PNG/JPEG).")
@click.option("--max-rows", type=click.IntRange(min=0), default=40, show_default=True,
              help="Show at most this many rows of the table (errors first); --json has them all.")
@workers_option("Threads decoding images.")
@near_dup_option
@quality_options
@click.option("--no-health", is_flag=True, help="Skip the image-quality and near-duplicate checks.")
@OVERWRITE
def validate(dataset, fmt, images, labels, min_face, fix, json_path, grid, max_rows, workers, near_dup_distance,
             quality, no_health, overwrite):
    """Check a dataset and list every problem: unreadable or truncated images, bad or orphan JSONs,
    sizes that disagree with the image (EXIF rotation included), boxes outside the image, inverted or
    empty boxes, unknown labels, duplicates and near duplicates, tiny faces, unlabeled images and
    negatives, blurry, dark, bright, low-information, oddly shaped or very small images (warnings,
    with the measured value), and for people/NAME/ crops the count per person and imbalance.

    Prints a table and a summary line; exits with status 1 if any issue is an error.

    \b
    Example:
      datatool validate datasets/me --labels face --min-face 12
      datatool validate datasets/me --fix --json reports/me-validate.json
      datatool validate wider_face_val_bbx_gt.txt --format wider --images WIDER_val/images
    """
    from ..core.errors import OutputExistsError
    from ..validate import validate as run_validate

    for out in (json_path, grid):
        if out is not None and out.exists() and not overwrite:
            raise OutputExistsError(f"{out}: already exists (use --overwrite to replace it)")
    allowed = [s for s in labels.split(",")] if labels is not None else None
    if allowed is not None and not any(s.strip() for s in allowed):
        raise click.BadParameter("give at least one label, e.g. --labels face", param_hint="--labels")

    report = run_validate(dataset, format=fmt, images=images, labels=allowed, min_face=min_face, fix=fix,
                          workers=workers, progress=True, near_dup_distance=None if no_health else near_dup_distance,
                          quality=None if no_health else quality)

    base = dataset if dataset.is_dir() else dataset.parent
    rows = _condense(report.issues, per_code=PER_CODE)
    print_issue_table(rows, limit=max_rows, relative_to=base)
    hidden = len(rows) - min(len(rows), max_rows)
    if hidden:
        click.echo(f"... {hidden} more rows not shown (--max-rows, or --json for all)")
    if report.fixed:
        n = len(report.fixed)
        click.echo(f"Fixed {n} file{'s' if n != 1 else ''}; each original kept beside it as NAME.json.bak "
                   "(or .bak1, .bak2, ... when a backup exists)")
    if json_path is not None:
        from ..core.fsutil import write_json_atomic

        write_json_atomic(json_path, report.to_dict())
        click.echo(f"Report written to {json_path}")
    if grid is not None:
        from ..validate import problem_sheet

        shown = problem_sheet(report, grid)
        click.echo(f"{shown} images with problems drawn to {grid}" if shown else
                   f"No image with a problem to draw; {grid} not written")
    summary = report.summary()
    click.echo(click.style(summary, fg="red" if report.has_errors else "green"))
    if report.has_errors:
        click.get_current_context().exit(1)
