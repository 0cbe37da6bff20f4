"""Small pieces shared by the CLI commands."""

from __future__ import annotations

import click

OVERWRITE = click.option("--overwrite", is_flag=True, help="Replace existing output files (never deletes inputs).")
SKIP_ERRORS = click.option("--skip-errors", is_flag=True,
                           help="Leave out images whose annotation has errors instead of stopping (they are listed).")


def echo_rejected(rejected, *, relative_to=None) -> None:
    """The summary line naming the annotated images left out for errors (`--skip-errors`)."""
    if not rejected:
        return
    import os

    names = [os.path.relpath(p, relative_to) if relative_to is not None else str(p) for p in rejected]
    shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    click.echo(f"left out {len(names)} annotated image(s) whose JSON has errors (--skip-errors): {shown}", err=True)


def workers_option(help: str):
    """The one `--workers` option: a thread or process count, at least 1 (default: the command's own)."""
    return click.option("--workers", type=click.IntRange(min=1), default=None, metavar="N", help=help)


def runner_options(fn):
    """`--runner local|beam` and `--beam-options`, the same on every command that can run on Beam."""
    fn = click.option("--beam-options", "beam_options", default="", metavar='"--FLAG=VALUE ..."',
                      help="Apache Beam pipeline options for --runner beam, as on a command line, e.g. "
                           '"--direct_num_workers=2 --direct_running_mode=multi_processing" or '
                           '"--runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp". '
                           "Default: Beam's DirectRunner on this machine.")(fn)
    return click.option("--runner", type=click.Choice(["local", "beam"]), default="local", show_default=True,
                        help="local: this machine's process pool. beam: Apache Beam (needs facekit[beam]); "
                             "the same per-image functions, so the same outputs.")(fn)


def check_runner(runner: str, out, beam_options: str, **local_only) -> None:
    """Refuse options that do not fit the runner, naming them: a URL as --out without Beam,
    --beam-options without Beam, and the local runner's own options (`local_only`, name ->
    value given) with Beam."""
    if runner == "local":
        if "://" in str(out):
            raise click.UsageError(f"--out {out}: a URL needs --runner beam (the local runner writes local folders)")
        if beam_options:
            raise click.UsageError("--beam-options: only with --runner beam")
        return
    given = [name for name, value in local_only.items() if value]
    if given:
        raise click.UsageError(f"{', '.join(given)}: only with --runner local (on Beam, give Beam's own options "
                               "in --beam-options, e.g. --direct_num_workers=N)")


def detector_option(default: str = "haar"):
    """The one `--detector` option used wherever a face detector is chosen."""
    return click.option(
        "--detector", "detector", default=default, show_default=True, metavar="haar|mtcnn|RUN",
        help="Face detector: 'haar' (OpenCV cascade, fast), 'mtcnn' (stronger, needs TensorFlow) "
             "or the path of a trained `trainer fit` run folder.",
    )


def print_issue_table(issues, *, limit: int | None = None, relative_to=None) -> None:
    """Issues as an aligned table on stdout: severity, file, field, message.

    With `relative_to` (a folder), files under it are shown relative to it and the file column is
    aligned too.
    """
    def show(file: str) -> str:
        if relative_to is None:
            return file
        import os

        rel = os.path.relpath(file, relative_to)
        return file if rel.startswith("..") else rel

    rows = [(i.severity.upper(), show(i.file), i.field or "-", i.message) for i in issues]
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        return
    w0 = max(len(r[0]) for r in rows)
    w1 = min(40, max(len(r[1]) for r in rows)) if relative_to is not None else 0
    w2 = min(28, max(len(r[2]) for r in rows))
    for sev, file, field, msg in rows:
        color = {"ERROR": "red", "WARNING": "yellow"}.get(sev)
        click.echo(f"{click.style(sev.ljust(w0), fg=color)}  {file.ljust(w1)}  {field.ljust(w2)}  {msg}")
