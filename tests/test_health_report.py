"""`datatool report`: the page's sections, links and images, checked in headless Chromium; bad input."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from datatool.cli import cli
from tests.healthdata import moved, save, scene, scene_pairs

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def browser() -> str | None:
    return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


def render(page: Path) -> str:
    """The page's DOM after load, as headless Chromium builds it (scripts run, images loaded)."""
    exe = browser()
    if exe is None:
        pytest.skip("no Chromium on this machine: `apt-get install chromium` (.ci/run installs it)")
    out = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
                          "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.fixture(scope="module")
def health(tmp_path_factory):
    """A dataset (12 scenes captured twice, a blurred and a dark image, a corrupt one), its split
    and audit, and the report on all three."""
    import cv2

    from datatool.split import split

    base = tmp_path_factory.mktemp("report")
    root = scene_pairs(base / "ds", n=12)
    images = root / "images"
    sharp = scene(100)
    save(images / "blurred.jpg", cv2.GaussianBlur(sharp, (0, 0), 6), group="bb" * 32)
    save(images / "dark.jpg", (scene(101) * 0.15).astype(np.uint8), group="dd" * 32)
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    split(root, out=base / "tf", ratios=(0.5, 0.25, 0.25), seed=0, progress=False)
    runner = CliRunner()
    res = runner.invoke(cli, ["audit", str(root), "--json", str(base / "audit.json")])
    assert res.exit_code == 0, res.output
    page = base / "out" / "report.html"
    res = runner.invoke(cli, ["report", str(root), "--tfdir", str(base / "tf"), "--audit", str(base / "audit.json"),
                              "--out", str(page)])
    return base, page, res


def test_report_cli_says_what_it_wrote_and_names_the_corrupt_image(health):
    _, page, res = health
    assert res.exit_code == 0, res.output
    assert page.is_file() and "Report written to" in res.output
    assert "broken.jpg" in res.output  # reported by name, skipped
    assert not list(page.parent.glob(".facekit-tmp-*"))  # written under a temp name, renamed


def test_report_loads_in_chromium_with_every_section_and_every_image(health):
    _, page, _ = health
    dom = render(page)
    for section in ("counts", "issues", "near-duplicates", "gallery", "split", "audit"):
        assert f'id="{section}"' in dom, section
    check = re.search(r'<p id="image-check"[^>]*>', dom).group(0)
    assert 'data-state="done"' in check and 'data-broken="0"' in check, check
    total = int(re.search(r'data-total="(\d+)"', check).group(1))
    assert total >= 26  # plots + a thumbnail per readable image at least


def test_report_is_offline_and_links_each_issue_to_its_image(health):
    _, page, _ = health
    text = page.read_text()
    assert not re.search(r'(src|href)="(https?:)?//', text)  # nothing fetched from the network
    assert 'href="../ds/images/blurred.jpg"' in text and 'href="../ds/images/broken.jpg"' in text
    for code in ("blurry", "dark", "near-duplicate"):
        assert f'<option value="{code}">' in text, code  # the gallery filter offers each issue
    assert re.search(r'data-codes="[^"]*blurry[^"]*"', text)


def test_report_shows_each_near_duplicate_pair_and_the_leaks_across_splits(health):
    base, page, _ = health
    text = page.read_text()
    assert "Near-duplicate clusters (12)" in text
    leaks = re.findall(r"<tr><td>(val|test)</td><td>(s\d\d)_[ab]\.jpg<br>.*?</td><td>(s\d\d)_[ab]\.jpg<br>", text)
    assert leaks, "seed 0 puts at least one scene's two captures in different splits"
    assert all(a == b for _, a, b in leaks)  # each leak is the other capture of the same scene


def test_empty_dataset_is_a_clear_message(tmp_path):
    (tmp_path / "empty" / "images").mkdir(parents=True)
    res = CliRunner().invoke(cli, ["report", str(tmp_path / "empty"), "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 1 and "no images found" in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("bad", ["-1", "17", "x"])
def test_near_dup_distance_out_of_range_is_a_clear_error(tmp_path, bad):
    save(tmp_path / "ds" / "images" / "a.jpg", scene(0))
    res = CliRunner().invoke(cli, ["report", str(tmp_path / "ds"), "--out", str(tmp_path / "r.html"),
                                   "--near-dup-distance", bad])
    assert res.exit_code != 0 and "--near-dup-distance" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "r.html").exists()


def test_existing_report_is_kept_without_overwrite(tmp_path):
    save(tmp_path / "ds" / "images" / "a.jpg", scene(0))
    page = tmp_path / "r.html"
    page.write_text("mine")
    res = CliRunner().invoke(cli, ["report", str(tmp_path / "ds"), "--out", str(page)])
    assert res.exit_code == 1 and "--overwrite" in res.output and page.read_text() == "mine"
