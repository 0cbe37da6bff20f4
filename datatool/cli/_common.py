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
