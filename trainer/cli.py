"""`trainer`: fit / evaluate / predict / export. TensorFlow is imported inside each command."""

from __future__ import annotations

import click

from . import __version__
from datatool.clikit import CONTEXT, FacekitGroup


@click.group(cls=FacekitGroup, context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="trainer")
def cli():
    """Train and use face detectors and recognizers from `datatool split` TFRecords.

    \b
    Example:
      trainer fit datasets/me-tf --out runs/me --backbone mobilenetv2
      trainer evaluate runs/me datasets/me-tf
      trainer predict runs/me photo.jpg --out predictions/
      trainer export runs/me --format tflite
    """


def main() -> None:
    cli(prog_name="trainer")
