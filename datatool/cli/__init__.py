"""`datatool`: the dataset CLI. A thin click layer: each command parses options, calls one
library function and turns library errors into one clear line (never a traceback).

Commands live one stage per module in this package; heavy libraries are imported inside
the command functions so `datatool --help` answers at once.
"""

from __future__ import annotations

import importlib

import click

from .. import __version__
from ..core.clikit import CONTEXT, FacekitGroup

# Stage modules that register commands on `cli` when imported (cheap: they import only click).
COMMAND_MODULES: list[str] = [
    "augment",
    "capture",
    "convert",
    "crop",
    "doctor",
    "health",
    "split",
    "validate",
]


@click.group(cls=FacekitGroup, context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="datatool")
def cli():
    """Build face datasets: capture, label, convert, validate, augment, split to TFRecords.

    \b
    A typical run:
      datatool capture datasets/me --count 150
      datatool label datasets/me --detector haar
      datatool validate datasets/me
      datatool augment datasets/me --out datasets/me-aug --factor 30
      datatool split datasets/me-aug --out datasets/me-tf
      trainer fit datasets/me-tf --out runs/me

    Run `datatool COMMAND --help` for each command's options and an example.

    Images over 120,000,000 pixels are refused before decoding (decompression bombs); set
    FACEKIT_MAX_PIXELS=N in the environment to raise the limit.
    """


for _name in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}")


def main() -> None:
    cli(prog_name="datatool")
