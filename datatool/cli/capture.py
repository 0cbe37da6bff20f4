"""`datatool capture`, `datatool prelabel`, `datatool label`: getting images and first labels."""

from __future__ import annotations

from pathlib import Path

import click

from ..core.faces import DEFAULT_MARGIN, DEFAULT_SIZE
from . import cli
from ._common import detector_option


def _size(ctx, param, value):
    if value is None:
        return None
    from ..capture import parse_size

    from ..core.errors import DatatoolError

    try:
        return parse_size(value)
    except DatatoolError as e:
        raise click.BadParameter(e.reason) from e


@cli.command()
@click.argument("dataset", type=click.Path(file_okay=False, path_type=Path))
@click.option("--source", default="0", show_default=True, metavar="0|PATH|URL|DIR",
              help="Camera index, video file, stream URL or folder of images.")
@click.option("--count", default=150, show_default=True, type=click.IntRange(min=0),
              help="Frames to save (0: until the source ends).")
@click.option("--interval", default=0.5, show_default=True, type=click.FloatRange(min=0),
              help="Seconds between saved frames: media time for a video file, wall time for a camera.")
@click.option("--countdown", default=3.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds to get ready before a camera starts saving.")
@click.option("--size", default=None, callback=_size, metavar="WxH",
              help="Resolution asked of a camera (default 640x480); other sources are shrunk to fit it.")
@click.option("--quality", default=95, show_default=True, type=click.IntRange(1, 100), help="JPEG quality.")
@click.option("--preview/--no-preview", default=None,
              help="Live window with countdown and counter [default: on when a display is available].")
@click.option("--person", default=None, metavar="NAME", help="Whose face this is (recognition data).")
@click.option("--crop-faces", is_flag=True,
              help="Save only the face crop, into DATASET/people/NAME/ (needs --person).")
@detector_option()
@click.option("--margin", default=DEFAULT_MARGIN, show_default=True, type=click.FloatRange(min=0),
              help="Crop margin around the face, as a fraction of its size on each side.")
@click.option("--crop-size", default=DEFAULT_SIZE, show_default=True, type=click.IntRange(min=16),
              help="Side of the square face crops, in pixels.")
def capture(dataset, source, count, interval, countdown, size, quality, preview, person, crop_faces,
            detector, margin, crop_size):
    """Grab frames from a camera, video, stream or folder into DATASET/images/.

    Files are named SESSION_NNNN.jpg and never overwrite anything; the capture session is
    stamped into each JPEG (prelabel copies it into the labelme JSON, so `split` can keep a
    session together). Ctrl-C keeps every frame already written. Press Esc or Q in the preview
    window to stop.

    \b
    Example:
      datatool capture datasets/me --count 150 --interval 0.5
      datatool capture datasets/me --source clip.mp4 --interval 0.5 --count 0
      datatool capture datasets/faces --person alice --crop-faces --detector haar
    """
    from ..capture import capture as run_capture

    result = run_capture(dataset, source=source, count=count, interval=interval, countdown=countdown,
                         size=size, quality=quality, preview=preview, person=person, crop_faces=crop_faces,
                         detector=detector, margin=margin, crop_size=crop_size)
    if result.preview_note and preview:
        click.echo(result.preview_note, err=True)
    for issue in result.issues:
        click.echo(str(issue), err=True)
    n = len(result.written)
    what = "face crop" if crop_faces else "frame"
    line = f"Saved {n} {what}{'s' if n != 1 else ''} to {result.out_dir} (session {result.session}, {result.source})"
    if crop_faces:
        line += f"; skipped {result.no_face} frame(s) with no face, {result.many_faces} with several"
    click.echo(line)
    if result.interrupted:
        click.echo(f"Interrupted: kept the {n} file(s) already written.", err=True)
    elif result.stopped_by_user:
        click.echo("Stopped from the preview window.", err=True)
    elif result.source_ended and count and n < count:
        click.echo(f"The source ended before {count} {what}s were saved.", err=True)
    if result.interrupted:
        raise SystemExit(130)


@cli.command()
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@detector_option()
@click.option("--labels", default="face", show_default=True, metavar="L1,L2",
              help="Label list; detected boxes get the first one.")
@click.option("--min-score", "--threshold", "min_score", default=0.0, show_default=True, type=float,
              help="Drop detections below this score (mtcnn and runs: 0-1; haar: cascade weight). A trained "
                   "run reports every face scoring at least this (0: the run's own threshold, 0.5).")
@click.option("--write-empty", is_flag=True,
              help="Also write an empty JSON (a negative) where nothing is found; by default such "
                   "images stay unlabeled for you to check.")
def prelabel(dataset, detector, labels, min_score, write_empty):
    """Write labelme JSONs with detected face boxes for images that have none (no GUI).

    An existing JSON is never touched. Open the result in `datatool label` to correct it.

    \b
    Example:
      datatool prelabel datasets/me --detector mtcnn
      datatool prelabel datasets/me --detector runs/me --min-score 0.8
    """
    from ..label import prelabel as run_prelabel

    result = run_prelabel(dataset, detector=detector, labels=labels, min_score=min_score, write_empty=write_empty)
    _prelabel_summary(result)
    if result.interrupted:
        raise SystemExit(130)


def _prelabel_summary(result) -> None:
    from ._common import print_issue_table

    print_issue_table(result.issues)
    click.echo(f"Prelabelled {len(result.written)} image(s) with {result.detector}; "
               f"{result.existing} already had a JSON (untouched).")
    click.echo(f"Boxes per image: {result.histogram_line()}")
    if result.interrupted:
        click.echo(f"Interrupted: kept the {len(result.written)} JSON(s) already written; "
                   f"run prelabel again to do the rest.", err=True)
    if result.no_face:
        click.echo(f"{len(result.no_face)} image(s) with no face found were left unlabeled "
                   f"(label them in `datatool label`, or rerun with --write-empty if they are negatives).")


@cli.command()
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--labels", default="face", show_default=True, metavar="L1,L2", help="Label list shown in labelme.")
@detector_option(default=None)
@click.option("--dry-run", is_flag=True, help="Print the labelme command instead of running it.")
@click.option("--only-suspects", "only_suspects", type=click.Path(path_type=Path, dir_okay=False), default=None,
              metavar="AUDIT.json", help="Open only the images a `datatool audit --json` file lists.")
def label(dataset, labels, detector, dry_run, only_suspects):
    """Open DATASET/images in labelme, annotations saved beside the images.

    With --detector, images without a JSON are prelabelled first, so you only correct boxes.
    labelme auto-saves when you move to the next image (D / A keys). With --only-suspects, labelme
    shows just the audit's suspect images (through links in images/.facekit-suspects/; saving
    writes the dataset's own JSONs).

    \b
    Example:
      datatool label datasets/me --detector haar
      datatool label datasets/me --dry-run
      datatool label datasets/me --only-suspects audit.json
    """
    from ..label import format_command, labelme_command, prelabel as run_prelabel, run_labelme

    target = dataset
    if only_suspects is not None:
        from ..label import suspects_folder

        target, linked, missing = suspects_folder(dataset, only_suspects)
        for m in missing:
            click.secho(f"skipped suspect (not in this dataset any more): {m}", fg="yellow", err=True)
        click.echo(f"{linked} suspect image(s) linked in {target}", err=True)
    cmd = labelme_command(target, labels=labels)
    if dry_run:
        if detector:
            click.echo(f"# would first run: datatool prelabel {dataset} --detector {detector} --labels {labels}")
        click.echo(format_command(cmd))
        return
    from ..label import check_can_launch

    check_can_launch()  # before a long prelabel: say at once what is missing
    if detector:
        result = run_prelabel(dataset, detector=detector, labels=labels)
        _prelabel_summary(result)
        if result.interrupted:
            raise SystemExit(130)
    click.echo(f"Starting: {format_command(cmd)}", err=True)
    code = run_labelme(target, labels=labels)
    from ..dataset import load_dataset

    ds = load_dataset(dataset, read_sizes=False)
    click.echo(f"labelme closed: {len(ds.labeled)} labeled, {len(ds.unlabeled)} unlabeled image(s) in {dataset}.")
    if code not in (0, 130):
        raise click.ClickException(f"labelme exited with status {code}")
