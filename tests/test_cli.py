"""Every command of both CLIs has help with an example; `--help` stays light and fast."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from datatool.cli import cli as datatool_cli
from trainer.cli import cli as trainer_cli

HEAVY = ["tensorflow", "keras", "albumentations", "pandas", "cv2", "labelme", "PyQt5", "matplotlib", "sklearn"]


def _commands(group: click.Group, prefix=()):
    for name, cmd in sorted(group.commands.items()):
        yield prefix + (name,), cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, prefix + (name,))


ALL = [("datatool", p, c) for p, c in _commands(datatool_cli)] + [("trainer", p, c) for p, c in _commands(trainer_cli)]


def test_both_clis_have_commands():
    assert datatool_cli.commands, "datatool has no commands"


@pytest.mark.parametrize("prog,path,cmd", ALL, ids=[f"{a}-{' '.join(b)}" for a, b, _ in ALL])
def test_every_command_has_help_with_an_example(prog, path, cmd):
    group = datatool_cli if prog == "datatool" else trainer_cli
    result = CliRunner().invoke(group, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert (cmd.help or "").strip(), f"{prog} {' '.join(path)} has no help text"
    assert "example" in result.output.lower(), f"{prog} {' '.join(path)} --help shows no example"


@pytest.mark.parametrize("module", ["datatool.cli", "trainer.cli"])
def test_help_does_not_import_heavy_libraries(module):
    code = (
        "import sys, json\n"
        f"from {module} import cli\n"
        "try:\n    cli(['--help'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = json.loads(out.strip().splitlines()[-1])
    assert loaded == [], f"`{module} --help` imported {loaded}"


@pytest.mark.parametrize("group,name", [(datatool_cli, "datatool"), (trainer_cli, "trainer")])
def test_version(group, name):
    result = CliRunner().invoke(group, ["--version"])
    assert result.exit_code == 0
    assert name in result.output and "0." in result.output
