"""Dataset health: `datatool audit` (likely label mistakes) and `datatool report` (one HTML page)."""

from __future__ import annotations

from pathlib import Path

import click

from . import cli
from ._common import OVERWRITE, detector_option


def _refuse_existing(*paths, overwrite: bool) -> None:
    from ..core.errors import OutputExistsError

    for out in paths:
        if out is not None and out.exists() and not overwrite:
            raise OutputExistsError(f"{out}: already exists (use --overwrite to replace it)")


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
