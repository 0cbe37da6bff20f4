"""`datatool doctor`: one check per part of the toolchain, a table or JSON, exit 1 only when a
required part is broken. (The Qt row on a real display and a broken one: tests/test_desktop.py.)"""

from __future__ import annotations

import json
from collections import namedtuple

import pytest
from click.testing import CliRunner

from datatool import doctor
from datatool.cli import cli

NAMES = ["python", "tensorflow", "opencv", "labelme", "qt/display", "cameras", "disk", "imagenet weights"]


@pytest.mark.slow
def test_doctor_checks_the_whole_toolchain(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # nothing cached there
    report_path = tmp_path / "doctor.json"
    result = CliRunner().invoke(cli, ["doctor", "--json", str(report_path), "--path", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert report["ok"] is True
    checks = {c["name"]: c for c in report["checks"]}
    assert list(checks) == NAMES
    for name in ("python", "tensorflow", "opencv", "labelme", "disk"):
        assert checks[name]["status"] == "ok", checks[name]
    assert checks["opencv"]["detail"].endswith("haarcascade_frontalface_default.xml")
    assert checks["tensorflow"]["detail"].startswith("2.")
    assert checks["labelme"]["detail"] == "6.3.1"  # the version pyproject.toml pins
    assert checks["qt/display"]["status"] == "info"  # the tests run Qt offscreen: no display needed
    assert checks["imagenet weights"]["status"] == "info" and "--weights none" in checks["imagenet weights"]["detail"]
    # the table: one line per check with its status, then the verdict
    lines = result.output.splitlines()
    assert [line.split("  ")[0].strip() for line in lines[:len(NAMES)]] == NAMES
    assert "OK" in lines[0] and lines[-1] == "Ready: nothing required is broken."


def test_doctor_exits_1_when_something_required_is_broken(tmp_path, monkeypatch):
    # a full disk, faked (filling one is not cheap); TensorFlow's import is covered above and slow
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10**6, 10**6))
    monkeypatch.setattr(doctor, "check_tensorflow", lambda: doctor.Check("tensorflow", "ok", "2.x", True))
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)  # a server: no display at all
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    result = CliRunner().invoke(cli, ["doctor", "--path", str(tmp_path)])
    assert result.exit_code == 1
    assert "Broken: disk." in result.output
    qt_line = next(line for line in result.output.splitlines() if line.startswith("qt/display"))
    assert "WARN" in qt_line and "DISPLAY is not set" in qt_line  # no display only warns

    result = CliRunner().invoke(cli, ["doctor", "--json", "-"])
    assert result.exit_code == 1
    report = json.loads(result.output)  # nothing but the JSON
    assert report["ok"] is False
    assert [c["name"] for c in report["checks"] if c["status"] == "fail"] == ["disk"]


def test_imagenet_weights_are_found_under_the_names_trainer_downloads(tmp_path):
    from trainer.weights import imagenet_filename

    env = {"KERAS_HOME": str(tmp_path)}
    assert doctor.check_imagenet_weights(env).status == "info"
    models = tmp_path / "models"
    models.mkdir()
    names = [imagenet_filename("mobilenetv2", image_size=96, alpha=0.35),
             imagenet_filename("vgg16", image_size=224, alpha=1.0)]
    for name in names:
        (models / name).write_bytes(b"")
    check = doctor.check_imagenet_weights(env)
    assert check.status == "ok" and all(name in check.detail for name in names)
    assert doctor.keras_models_dir({"HOME": str(tmp_path)}) == tmp_path / ".keras" / "models"


def test_cameras_are_tried_by_index_and_each_is_reported():
    # not Linux: no device list, indexes 0-2 are opened (each within the timeout)
    check = doctor.check_cameras(timeout=2.0, platform="darwin")
    assert check.status in ("ok", "info")
    assert all(str(i) in check.detail for i in range(3))


@pytest.mark.parametrize("checks,ok", [
    ([doctor.Check("a", "ok", ""), doctor.Check("b", "warn", "", True)], True),  # a warning is not broken
    ([doctor.Check("a", "fail", "")], True),  # an optional part failing is not either
    ([doctor.Check("a", "ok", ""), doctor.Check("b", "fail", "", True)], False),  # a required one is
])
def test_report_is_ok_unless_a_required_check_fails(checks, ok):
    assert doctor.report(checks)["ok"] is ok
