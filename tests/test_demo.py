"""The README's main job (`make demo` -> scripts/demo.sh) still runs end to end, at a tiny size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_runs_end_to_end_and_reports_what_it_measured(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "DEMO_SMALL": "1", "DEMO_OUT": str(out),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    run = subprocess.run(["bash", str(REPO / "scripts" / "demo.sh")], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "Traceback" not in run.stdout + run.stderr

    report = (out / "report" / "report.md").read_text()
    # the report's figures are the run's own: held-out metrics and split counts appear as measured
    held = json.loads((out / "report" / "heldout" / "metrics.json").read_text())
    assert held["images"] == 10  # datasets/sample/heldout
    assert f"| {held['images']} | {held['presence']['accuracy']:.3f} |" in report
    counts = json.loads((out / "tfrecords" / "dataset.json").read_text())["counts"]
    assert f"| train | {counts['train']['images']} |" in report
    # and it shows the pictures it names
    for pic in ("dataset.png", "augmented.png", "tfrecords.png", "heldout_predictions.png",
                "test/pr_curve.png", "heldout/pr_curve.png"):
        assert (out / "report" / pic).is_file(), pic
        assert pic in report
    assert (out / "run" / "curves.png").is_file() and (out / "run" / "model.keras").is_file()
    assert "Trained from scratch" in report  # no ImageNet weights here, and the report says so
    assert (out / "report" / "report.html").read_text().count("<img") >= 7
    # the dataset health page (audit + report) is written and the demo report links it
    assert (out / "report" / "health.html").is_file() and (out / "report" / "audit.json").is_file()
    assert '<a href="health.html">' in (out / "report" / "report.html").read_text()
