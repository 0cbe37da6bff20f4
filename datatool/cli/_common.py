"""Small pieces shared by the CLI commands."""

from __future__ import annotations

import click

OVERWRITE = click.option("--overwrite", is_flag=True, help="Replace existing output files (never deletes inputs).")


def detector_option(default: str = "haar"):
    """The one `--detector` option used wherever a face detector is chosen."""
    return click.option(
        "--detector", "detector", default=default, show_default=True, metavar="haar|mtcnn|RUN",
        help="Face detector: 'haar' (OpenCV cascade, fast), 'mtcnn' (stronger, needs TensorFlow) "
             "or the path of a trained `trainer fit` run folder.",
    )


def print_issue_table(issues, *, limit: int | None = None) -> None:
    """Issues as an aligned table on stdout: severity, file, field, message."""
    rows = [(i.severity.upper(), i.file, i.field or "-", i.message) for i in issues]
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        return
    w0 = max(len(r[0]) for r in rows)
    w2 = min(28, max(len(r[2]) for r in rows))
    for sev, file, field, msg in rows:
        color = {"ERROR": "red", "WARNING": "yellow"}.get(sev)
        click.echo(f"{click.style(sev.ljust(w0), fg=color)}  {file}  {field.ljust(w2)}  {msg}")
