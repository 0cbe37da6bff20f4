"""`datatool convert` and `datatool merge`."""

from __future__ import annotations

from pathlib import Path

import click

from ..dataset import FORMATS
from . import cli
from ._common import OVERWRITE, SKIP_ERRORS, print_issue_table

TABLE_LIMIT = 20


def _show_issues(issues) -> None:
    shown = sorted(issues, key=lambda i: ("error", "warning", "info").index(i.severity))
    print_issue_table(shown, limit=TABLE_LIMIT)
    if len(shown) > TABLE_LIMIT:
        click.echo(f"... and {len(shown) - TABLE_LIMIT} more issues (run `datatool validate` for all of them)")


@cli.command("convert")
@click.argument("src", type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Destination folder.")
@click.option("--from", "src_format", required=True, type=click.Choice(list(FORMATS)), help="Format of SRC.")
@click.option("--to", "dst_format", default="labelme", show_default=True, type=click.Choice(list(FORMATS)),
              help="Format to write.")
@click.option("--images", type=click.Path(path_type=Path),
              help="Images folder of SRC (WIDER: e.g. WIDER_train/images; default: images/ beside SRC).")
@click.option("--min-face", type=click.FloatRange(min=0), default=0, show_default=True, metavar="PX",
              help="Drop faces whose smaller side is below PX pixels.")
@click.option("--wider-skip-invalid", is_flag=True, help="Drop faces WIDER marks invalid.")
@click.option("--max-blur", type=click.IntRange(0, 2), default=None, metavar="0|1|2",
              help="Drop faces blurrier than this (WIDER blur: 0 clear, 1 normal, 2 heavy).")
@SKIP_ERRORS
@OVERWRITE
def convert_cmd(src, out, src_format, dst_format, images, min_face, wider_skip_invalid, max_blur, skip_errors,
                overwrite):
    """Convert SRC from one annotation format to another; images are copied alongside.

    Formats: labelme (a dataset folder), wider (SRC = the gt txt, --images = its images tree),
    coco, voc, yolo, csv. Zero-size faces are always dropped; an image whose every face is
    filtered out is skipped (it still shows faces, so it is not a negative). Errors in SRC stop
    the conversion before anything is written, unless --skip-errors. An existing destination file
    is never replaced without --overwrite.

    \b
    Example: WIDER FACE to a labelme dataset (images under DST/images/<event>/, JSON beside):
      datatool convert wider_face_split/wider_face_val_bbx_gt.txt --from wider \\
          --images WIDER_val/images --out datasets/wider-val --min-face 20 --wider-skip-invalid
    \b
    Example: a labelme dataset to COCO JSON:
      datatool convert datasets/me --from labelme --to coco --out exports/me-coco
    """
    from ..convert import FaceFilter, ReadErrors, convert
    from ..core.fsutil import command_line

    face_filter = FaceFilter(min_face=min_face, skip_invalid=wider_skip_invalid, max_blur=max_blur)
    try:
        result = convert(src, out, src_format=src_format, dst_format=dst_format, images=images,
                         face_filter=face_filter, overwrite=overwrite, skip_errors=skip_errors,
                         command=command_line(), progress_bar=True)
    except ReadErrors as e:
        _show_issues(e.issues)
        raise click.ClickException(str(e)) from e
    if result.issues:
        _show_issues(result.issues)
    click.echo(result.summary())
    click.echo(f"Wrote {out} ({dst_format})")


@cli.command("merge")
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Destination dataset folder.")
@OVERWRITE
def merge_cmd(sources, out, overwrite):
    """Merge labelme datasets (e.g. capture sessions) into one, losing nothing.

    Each source goes under OUT/images/<its folder name>/ (with -2, -3 if two sources share a
    name), so keys stay unique and tell where they came from. Every image is copied, labeled or
    not; each JSON is copied with only imagePath rewritten, keeping group and session; person
    crops go to OUT/people/NAME/<source>/. OUT/dataset.json lists the parents.

    \b
    Example:
      datatool merge datasets/me-morning datasets/me-evening --out datasets/me
    """
    from ..convert import merge
    from ..core.fsutil import command_line

    result = merge(list(sources), out, overwrite=overwrite, command=command_line(), progress_bar=True)
    if result.issues:
        _show_issues(result.issues)
    for src, prefix in result.prefixes.items():
        click.echo(f"{src} -> {out / 'images' / prefix}")
    click.echo(result.summary())
