"""`datatool crop`: face crops per person (people/NAME/*.jpg) from a boxed dataset."""

from __future__ import annotations

from pathlib import Path

import click

from ..core.faces import DEFAULT_MARGIN, DEFAULT_SIZE
from . import cli
from ._common import OVERWRITE, SKIP_ERRORS, echo_rejected, print_issue_table


@cli.command()
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="New dataset folder (DST) for people/NAME/*.jpg, crops.csv and dataset.json.")
@click.option("--person", default=None, metavar="NAME",
              help="Every face in DATASET is NAME (an image with several unnamed faces is skipped).")
@click.option("--label-as-person", is_flag=True,
              help="Each box's label is the person's name; boxes labelled 'face', 'head', ... are skipped.")
@click.option("--allow-label", "allow_labels", multiple=True, metavar="LABEL",
              help="With --label-as-person, accept this generic label (e.g. 'face') as a name anyway. Repeatable.")
@click.option("--margin", default=DEFAULT_MARGIN, show_default=True, type=click.FloatRange(min=0),
              help="Context around the face, as a fraction of its size on each side.")
@click.option("--size", default=DEFAULT_SIZE, show_default=True, type=click.IntRange(16, 4096),
              help="Side of the square crops, in pixels.")
@click.option("--min-face", default=20.0, show_default=True, type=click.FloatRange(min=0), metavar="PX",
              help="Skip faces whose shorter side is below this many pixels.")
@click.option("--quality", default=95, show_default=True, type=click.IntRange(1, 100), help="JPEG quality.")
@click.option("--grid", "grid", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also save a contact sheet of the crops, one row per person (PNG/JPEG).")
@SKIP_ERRORS
@OVERWRITE
def crop(dataset, out, person, label_as_person, allow_labels, margin, size, min_face, quality, grid, skip_errors,
         overwrite):
    """Cut every labelled face of DATASET into DST/people/NAME/ for a recognizer.

    Crops are square (the box's longer side plus the margin, shifted to stay inside the
    photo, never stretched or padded) and named <image key stem>_<box index>.jpg. Each crop
    carries its source photo's group in the JPEG, so `split --task identity` never puts two
    crops of one photo in different splits. Negatives, unlabeled images and faces smaller
    than --min-face are skipped and counted. An image whose labelme JSON has an error stops the
    run before anything is written, unless --skip-errors leaves it out. Nothing is overwritten
    without --overwrite.

    \b
    Example:
      datatool crop datasets/me --out datasets/me-faces --person alice
      datatool crop datasets/friends --out datasets/friends-faces --label-as-person --grid crops.jpg
      datatool split datasets/friends-faces --out datasets/friends-tf --task identity
    """
    from ..core.fsutil import refuse_existing
    from ..crop import SKIP_REASONS, crop_dataset, crop_sheet

    refuse_existing(grid, overwrite=overwrite)
    result = crop_dataset(dataset, out=out, person=person, label_as_person=label_as_person,
                          allow_labels=allow_labels, margin=margin, size=size, min_face=min_face,
                          quality=quality, overwrite=overwrite, skip_errors=skip_errors)
    shown = [i for i in result.issues if i.severity != "info"]
    if shown:
        click.echo(f"{len(shown)} problem(s):")
        print_issue_table(shown, limit=20, relative_to=dataset)
        if len(shown) > 20:
            click.echo(f"... and {len(shown) - 20} more")
        click.echo()
    width = max([6] + [len(p) for p in result.per_person])
    click.echo(f"{'person':<{width}}  {'crops':>5}  {'photos':>6}")
    for name, n in result.per_person.items():
        click.echo(f"{name:<{width}}  {n:>5}  {result.sources_per_person.get(name, 0):>6}")
    for reason, n in result.skipped.items():
        if n:
            click.echo(f"skipped {n} {SKIP_REASONS[reason]}")
    echo_rejected(result.rejected, relative_to=dataset)
    if grid and result.written:
        shown_n = crop_sheet(result, grid)
        click.echo(f"wrote {grid} ({shown_n} crops)")
    n_people = len(result.per_person)
    click.echo(f"wrote {result.total} crop(s) of {n_people} {'person' if n_people == 1 else 'people'} "
               f"to {out / 'people'}")
    if result.interrupted:
        click.echo(f"Interrupted: kept the {result.total} crop(s) already written; rerun with --overwrite "
                   "to make them all.", err=True)
        raise SystemExit(130)
