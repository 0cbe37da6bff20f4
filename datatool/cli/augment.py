"""`datatool augment` and `datatool preview`: thin click wrappers over datatool.augment (and its preview)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import cli
from ._common import OVERWRITE, SKIP_ERRORS, check_runner, echo_rejected, print_issue_table, runner_options, workers_option


def _print_recipes() -> None:
    from ..augment import describe_recipe, list_recipes, load_recipe

    for name in list_recipes():
        r = load_recipe(name)
        click.echo(f"{name:<8}  {r.sha256[:12]}  on_empty={r.on_empty:<8}  {r.description}")
        click.echo(f"{'':<8}  {describe_recipe(r)}")


@cli.command()
@click.argument("dataset", required=False, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(), help="Output dataset folder (DST); with --runner beam also a gs:// or s3:// URL.")
@click.option("--factor", default=30, show_default=True, type=click.IntRange(min=0),
              help="Variants to make of each image.")
@click.option("--recipe", default="default", show_default=True, metavar="NAME|PATH.yaml",
              help="A shipped recipe (see --list-recipes) or an Albumentations A.save YAML file.")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed; with the recipe and each image's bytes it fixes every variant.")
@workers_option("Processes [default: all cores, fewer for small jobs]; 1 runs in this process, with a thread "
                "that encodes and writes beside it. Outputs are identical for any number.")
@click.option("--keep-originals/--no-keep-originals", default=True, show_default=True,
              help="Copy the source images (with their JSON, group added) into DST too.")
@click.option("--quality", default=95, show_default=True, type=click.IntRange(1, 100), help="JPEG quality.")
@click.option("--resume", is_flag=True, help="Finish an interrupted run into DST: make only what is missing.")
@SKIP_ERRORS
@OVERWRITE
@click.option("--list-recipes", is_flag=True, help="List the shipped recipes and exit.")
@click.option("--show-recipe", metavar="NAME|PATH", help="Print a recipe's YAML and exit.")
@runner_options
def augment(dataset, out, factor, recipe, seed, workers, keep_originals, quality, resume, skip_errors, overwrite,
            list_recipes, show_recipe, runner, beam_options):
    """Grow a labeled dataset with reproducible, box-aware augmentation.

    Writes FACTOR variants of every labeled image of DATASET (and of people/NAME/*.jpg crops)
    into DST as images + labelme JSONs, plus manifest.csv and dataset.json. Each variant is a
    pure function of (recipe, image bytes, variant index, --seed): reruns and any --workers give
    byte-identical files. Unlabeled images are skipped; negatives stay negatives. A variant whose
    faces were all cropped out is redrawn, or kept as a negative if the recipe says
    `facekit: {on_empty: negative}`. An image whose labelme JSON has an error (a broken shape,
    a bad size) stops the run before anything is written, unless --skip-errors leaves it out.

    \b
    Example:
      datatool augment datasets/me --out datasets/me-aug --factor 30 --recipe default --seed 0
      datatool augment datasets/me --out datasets/me-aug --factor 30 --resume   # after Ctrl-C
      datatool augment --list-recipes
      datatool augment --show-recipe heavy > my-recipe.yaml   # edit, then --recipe my-recipe.yaml
      datatool preview datasets/me-aug --grid aug.png
      datatool augment datasets/me --out datasets/me-aug --runner beam \\
          --beam-options "--direct_num_workers=2 --direct_running_mode=multi_processing"

    --runner beam writes the same files, byte for byte, all at once at the end (no --resume).
    """
    from ..augment import augment_dataset, load_recipe
    from ..core.fsutil import command_line

    if list_recipes:
        _print_recipes()
        return
    if show_recipe:
        r = load_recipe(show_recipe)
        click.echo(f"# {r.path}  (sha256 {r.sha256[:12]})", err=True)
        click.echo(r.text, nl=False)
        return
    if dataset is None or out is None:
        raise click.UsageError("give a DATASET and --out DST (or --list-recipes / --show-recipe NAME)")
    check_runner(runner, out, beam_options, **{"--workers": workers is not None, "--resume": resume})
    kwargs = dict(out=out, recipe=recipe, factor=factor, seed=seed, keep_originals=keep_originals,
                  overwrite=overwrite, quality=quality, skip_errors=skip_errors, command=command_line())
    if runner == "beam":
        from ..beam import require_beam

        require_beam()
        from ..beam.augment import augment_on_beam

        try:
            s = augment_on_beam(dataset, beam_options=beam_options, **kwargs)
        except KeyboardInterrupt:
            click.echo(f"\nInterrupted: nothing was written to {out}.", err=True)
            sys.exit(130)
    else:
        try:
            s = augment_dataset(dataset, workers=workers, resume=resume, progress=True, **kwargs)
        except KeyboardInterrupt:
            click.echo(f"\nInterrupted: finished files in {out} are complete; rerun the same command with "
                       "--resume to make only what is missing.", err=True)
            sys.exit(130)
    c = s.counts
    if s.issues:
        click.echo(f"{len(s.issues)} annotation problem(s) in {dataset} (run `datatool validate`):", err=True)
        print_issue_table(s.issues, limit=20)
    click.echo(
        f"{c['variants']} variants of {c['sources']} images"
        + (f" ({c['people_sources']} people crops)" if c["people_sources"] else "")
        + f" + {c['originals']} originals -> {out}  [recipe {s.recipe} {s.recipe_sha256[:12]}, seed {seed}]")
    click.echo(
        f"negatives: {c['negative_sources']} source(s) kept negative, {c['negatives_made']} variant(s) whose faces "
        f"were cropped out kept as negatives; {c['redraws']} redraw(s), {c['dropped']} variant(s) dropped "
        f"after too many redraws")
    if c["resumed"]:
        click.echo(f"{c['resumed']} output(s) were already complete (resumed)")
    if c["unlabeled_skipped"] or c["unreadable_skipped"]:
        click.echo(f"skipped: {c['unlabeled_skipped']} unlabeled, {c['unreadable_skipped']} unreadable")
    echo_rejected(s.rejected)
    click.echo(f"manifest: {s.manifest}   record: {s.record}")
    if s.errors:
        for e in s.errors[:20]:
            click.echo(f"Error: {e}", err=True)
        raise click.ClickException(f"{len(s.errors)} source image(s) failed; fix them and rerun with --resume")


@cli.command()
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--grid", required=True, type=click.Path(path_type=Path), help="Output picture (.png or .jpg).")
@click.option("--n", "n", default=16, show_default=True, type=click.IntRange(min=1), help="Images to show.")
@click.option("--seed", default=0, show_default=True, type=int, help="Which images (and variants) to pick.")
@click.option("--recipe", default=None, metavar="NAME|PATH.yaml",
              help="Show variants made on the fly with this recipe instead of the images themselves.")
@click.option("--cell", default=256, show_default=True, type=click.IntRange(min=32), help="Cell size in pixels.")
@SKIP_ERRORS
@OVERWRITE
def preview(dataset, grid, n, seed, recipe, cell, skip_errors, overwrite):
    """Draw a contact sheet of a dataset's images with their boxes and labels.

    Negatives are titled NEG, unlabeled images UNLAB, unreadable files BAD. With --recipe, each
    cell is a variant computed on the fly, exactly as `datatool augment --seed S` would write
    it, so you can judge a recipe before augmenting. An image whose labelme JSON has an error
    stops the preview (it would look like a negative), unless --skip-errors leaves it out.

    \b
    Example:
      datatool preview datasets/me-aug --grid aug.png --n 16
      datatool preview datasets/me --grid heavy.png --recipe heavy --seed 1
    """
    from ..augment.preview import write_preview

    p = write_preview(dataset, grid, n=n, seed=seed, cell=cell, recipe=recipe, overwrite=overwrite,
                      skip_errors=skip_errors)
    click.echo(f"{len(p.titles)} images -> {p.path} ({p.width}x{p.height})")
    echo_rejected(p.rejected)
    if p.unreadable:
        click.echo(f"{len(p.unreadable)} unreadable:", err=True)
        for why in p.unreadable[:5]:
            click.echo(f"  {why}", err=True)
