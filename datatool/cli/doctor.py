"""`datatool doctor`: is this machine ready? Python, TensorFlow, OpenCV, labelme, Qt/display,
cameras, disk, cached ImageNet weights."""

from __future__ import annotations

from pathlib import Path

import click

from . import cli

COLORS = {"ok": "green", "warn": "yellow", "fail": "red"}


@cli.command()
@click.option("--json", "json_path", default=None, metavar="PATH",
              help="Also write the checks as JSON to PATH ('-': print only the JSON).")
@click.option("--path", "path", type=click.Path(exists=True, file_okay=False, path_type=Path), default=".",
              show_default=True, help="Folder whose free disk space is checked (where datasets go).")
@click.option("--camera-timeout", type=click.FloatRange(min=0.1), default=3.0, show_default=True,
              metavar="S", help="Seconds to wait for each camera to deliver a frame.")
def doctor(json_path, path, camera_timeout):
    """Check the toolchain: Python, TensorFlow, OpenCV and its Haar cascade, labelme, whether Qt can
    open a window on this display (with the packages to install when it cannot), cameras that open,
    free disk, ImageNet weights cached for `trainer fit`.

    Exits 1 only when something required is broken; no display or no camera is a warning or a note.

    \b
    Example:
      datatool doctor
      datatool doctor --json - | python -m json.tool
    """
    import json
    import sys

    from ..doctor import report, run_checks

    checks = run_checks(path=path, camera_timeout=camera_timeout)
    result = report(checks)
    text = json.dumps(result, indent=2) + "\n"
    if json_path == "-":
        sys.stdout.write(text)
    else:
        if json_path:
            from ..core.fsutil import write_text_atomic

            write_text_atomic(Path(json_path), text)
        width = max(len(c.name) for c in checks)
        for c in checks:
            status = click.style(c.status.upper().ljust(4), fg=COLORS.get(c.status))
            first, *rest = c.detail.splitlines() or [""]
            click.echo(f"{c.name.ljust(width)}  {status}  {first}")
            for line in rest:  # the install command of the Qt check goes on its own lines
                click.echo(f"{'':{width}}        {line}")
        broken = [c.name for c in checks if c.broken]
        click.echo(f"Broken: {', '.join(broken)}." if broken else "Ready: nothing required is broken.")
    if not result["ok"]:
        raise SystemExit(1)
