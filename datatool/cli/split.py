"""`datatool split`, `datatool inspect`, `datatool stats`: TFRecords out, and looking at data."""

from __future__ import annotations

from pathlib import Path

import click

from . import cli
from ._common import OVERWRITE, SKIP_ERRORS, check_runner, echo_rejected, print_issue_table, runner_options, workers_option
from .health import near_dup_option


def _shards(_ctx, _param, value: str) -> str | int:
    if value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        raise click.BadParameter(f"expected 'auto' or a positive number, got {value!r}") from None
    if n < 1:
        raise click.BadParameter(f"expected 'auto' or a positive number, got {n}")
    return n


@cli.command("split")
@click.argument("dataset", type=click.Path(path_type=Path, file_okay=False))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="TFDIR to write: shards, split.csv, dataset.json (and labels.txt for identity); "
                   "with --runner beam also a gs:// or s3:// URL.")
@click.option("--ratios", default="0.7,0.15,0.15", show_default=True, help="train,val,test fractions.")
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed, same split, same bytes.")
@click.option("--group-by", type=click.Choice(["group", "session"]), default="group", show_default=True,
              help="Keep together every variant of one original (group) or every frame of a capture session.")
@click.option("--shards", default="auto", show_default=True, metavar="auto|N", callback=_shards,
              help="Shards per split; auto aims at ~150 MB each and several for train.")
@click.option("--max-side", type=int, default=None, metavar="PX", help="Downscale so the longest side is at most PX.")
@click.option("--task", type=click.Choice(["detection", "identity"]), default="detection", show_default=True,
              help="detection: images/ + labelme boxes; identity: people/NAME/*.jpg with a class label.")
@workers_option("Threads preparing images (default: CPU count, max 8).")
@click.option("--group-near-duplicates", is_flag=True,
              help="Merge groups (or sessions) holding near-duplicate images into one unit first, so two "
                   "captures of one scene never straddle splits (decodes each image whose hash is not cached "
                   "yet - validate caches them; off by default so "
                   "existing splits stay the same).")
@near_dup_option
@SKIP_ERRORS
@OVERWRITE
@runner_options
def split_cmd(dataset, out, ratios, seed, group_by, shards, max_side, task, workers, group_near_duplicates,
              near_dup_distance, skip_errors, overwrite, runner, beam_options):
    """Split DATASET into train/val/test TFRecords with no group crossing splits.

    Augmented variants stay in the split of their original (or, with --group-by session,
    whole capture sessions stay together); negatives (or each person, for identity) are
    spread over the splits in proportion. Images go in as upright JPEG (EXIF rotation
    applied); unlabeled images are left out and listed in split.csv. An image whose labelme
    JSON has an error stops the split before anything is written, unless --skip-errors leaves
    it out (listed in split.csv too).

    \b
    Example:
      datatool split datasets/me-aug --out datasets/me-tf --ratios 0.7,0.15,0.15 --seed 0
      datatool split datasets/me --out datasets/me-tf --group-by session --max-side 640
      datatool split datasets/friends --out datasets/friends-tf --task identity
      datatool split datasets/me --out datasets/me-tf --group-near-duplicates
      datatool split datasets/me-aug --out datasets/me-tf --runner beam \\
          --beam-options "--direct_num_workers=2 --direct_running_mode=multi_processing"

    With --runner beam, the shards and split.csv are the same files, byte for byte, as with
    --runner local.
    """
    check_runner(runner, out, beam_options, **{"--workers": workers is not None})
    kwargs = dict(ratios=ratios, seed=seed, group_by=group_by, shards=shards, max_side=max_side, task=task,
                  overwrite=overwrite, group_near_duplicates=group_near_duplicates,
                  near_dup_distance=near_dup_distance, skip_errors=skip_errors)
    if runner == "beam":
        from ..beam import require_beam

        require_beam()
        from ..beam.split import split_on_beam

        summary = split_on_beam(dataset, out=out, beam_options=beam_options, **kwargs)
    else:
        from ..split import split

        summary = split(dataset, out=Path(out), workers=workers, **kwargs)
    identity = summary.task == "identity"
    third = "people" if identity else "faces  negatives"
    click.echo(f"{'split':<6} {'images':>7} {'groups':>7} {'shards':>6}  {third}")
    for name, c in summary.counts.items():
        rest = (", ".join(f"{k}: {v}" for k, v in c.get("per_identity", {}).items()) or "-") if identity \
            else f"{c['faces']:>5}  {c['negatives']:>9}"
        click.echo(f"{name:<6} {c['images']:>7} {c['groups']:>7} {len(summary.shards[name]):>6}  {rest}")
    if summary.excluded:
        click.echo(f"\n{len(summary.excluded)} image(s) excluded (listed in split.csv):")
        print_issue_table(summary.excluded, limit=20)
    for w in summary.warnings:
        click.secho(f"warning: {w}", fg="yellow", err=True)
    if summary.merged_units is not None:
        click.echo(f"near-duplicate grouping: {summary.merged_units} unit(s) merged into others "
                   f"(within {near_dup_distance} bits)")
    click.echo(f"\nwrote {out} ({summary.passthrough} JPEG(s) passed through, {summary.reencoded} re-encoded)")


@cli.command("inspect")
@click.argument("tfdir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--grid", "grid", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Save a contact sheet of records with their boxes, decoded from the TFRecords.")
@click.option("--n", "n", default=16, show_default=True, type=click.IntRange(1, 400), help="Records in the grid.")
@click.option("--seed", default=0, show_default=True, type=int, help="Which records the grid shows.")
@click.option("--json", "json_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write the report as JSON.")
@near_dup_option
@click.option("--strict", is_flag=True,
              help="Also exit 1 when a val/test image is a near duplicate of a train image.")
@OVERWRITE
def inspect_cmd(tfdir, grid, n, seed, json_path, near_dup_distance, strict, overwrite):
    """Read TFDIR back exactly as the trainer will: counts per split, every record decoded.

    Exits 1 when a record does not parse or decode (reported by shard and index), or when a
    group id shows up in two splits. Lists every val/test record whose image is a near
    duplicate of a train record (different groups and sessions too); --strict exits 1 on those.

    \b
    Example:
      datatool inspect datasets/me-tf
      datatool inspect datasets/me-tf --grid preview.jpg --n 25 --json inspect.json
    """
    from ..core.fsutil import refuse_existing, write_json_atomic
    from ..inspect import draw_tfrecord_grid, inspect_tfrecords

    refuse_existing(json_path, grid, overwrite=overwrite)
    report = inspect_tfrecords(tfdir, near_dup_distance=near_dup_distance)
    click.echo(f"{'split':<6} {'records':>8} {'faces':>7} {'negatives':>9} {'groups':>7} {'shards':>6}  identities")
    for name, c in report.splits.items():
        ids = ", ".join(f"{k}: {v}" for k, v in sorted(c.identities.items())) or "-"
        click.echo(f"{name:<6} {c.records:>8} {c.faces:>7} {c.negatives:>9} {len(c.groups):>7} "
                   f"{len(c.shards):>6}  {ids}")
    for bad in report.bad[:50]:
        click.secho(f"bad record: {bad}", fg="red")
    if len(report.bad) > 50:
        click.secho(f"... and {len(report.bad) - 50} more bad records", fg="red")
    for group, splits in list(report.leaked_groups.items())[:20]:
        click.secho(f"leak: group {group[:16]}... is in {', '.join(splits)}", fg="red")
    for sid in report.duplicate_ids[:20]:
        click.secho(f"duplicate image/source_id: {sid}", fg="red")
    leaks = report.near_duplicate_leaks
    for lk in leaks[:20]:
        click.secho(f"near-duplicate leak: {lk.split} {lk.key} is {lk.distance} bits from train {lk.train_key}",
                    fg="red" if strict else "yellow")
    if len(leaks) > 20:
        click.echo(f"... and {len(leaks) - 20} more near-duplicate leaks (--json lists them all)")
    if leaks:
        click.echo(f"{len(leaks)} val/test record(s) are near duplicates of train records "
                   f"(within {near_dup_distance} bits); `datatool split --group-near-duplicates` keeps them together")
    if json_path:
        write_json_atomic(json_path, report.to_dict())
        click.echo(f"wrote {json_path}")
    if grid:
        drawn = draw_tfrecord_grid(tfdir, grid, n=n, seed=seed)
        click.echo(f"wrote {grid} ({drawn} records)")
    if not report.ok or (strict and leaks):
        raise click.exceptions.Exit(1)
    click.echo("all records decode")


@cli.command("stats")
@click.argument("dataset", type=click.Path(path_type=Path, file_okay=False))
@click.option("--json", "json_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write the statistics as JSON.")
@click.option("--plots", "plots", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder for PNG histograms (faces per image, box size/aspect/centres, image sizes, people).")
@OVERWRITE
@SKIP_ERRORS
def stats_cmd(dataset, json_path, plots, skip_errors, overwrite):
    """Summarise DATASET: images, faces per image, negatives, box sizes and positions, people.

    An image whose labelme JSON has an error is neither a face image nor a negative: it stops
    the summary (exit 1), unless --skip-errors leaves it out (and names it).

    \b
    Example:
      datatool stats datasets/me
      datatool stats datasets/me-aug --json stats.json --plots stats/
    """
    from ..core.fsutil import refuse_existing, write_json_atomic
    from ..stats import PLOT_NAMES, dataset_stats, format_table, public, save_plots

    refuse_existing(json_path, *((plots / n for n in PLOT_NAMES) if plots else ()), overwrite=overwrite)
    stats = dataset_stats(dataset, skip_errors=skip_errors)
    click.echo(format_table(stats))
    echo_rejected(stats["rejected"])
    if json_path:
        write_json_atomic(json_path, public(stats))
        click.echo(f"wrote {json_path}")
    if plots:
        written = save_plots(stats, plots, overwrite=overwrite)
        click.echo(f"wrote {len(written)} plot(s) to {plots}")
