"""A broken shape is an error, never a negative: `dataset.load_dataset` rejects the image, every
stage stops on it, and with --skip-errors leaves it out and names it (issue 14, item 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import write_image, write_labelme_json
from datatool.cli import cli
from datatool.dataset import RejectedImages, load_dataset, refuse_rejected

FACE = (8, 6, 30, 30)


@pytest.fixture
def broken(tmp_path) -> Path:
    """3 face images (one group each) and bad.jpg: a face whose JSON holds a good box and a
    rectangle with 3 points - once kept as a 1-box sample, or as a negative had it been the only one."""
    root = tmp_path / "ds"
    for k in range(3):
        img = write_image(root / "images" / f"good{k}.jpg", seed=k, box=FACE)
        write_labelme_json(img, [FACE], width=64, height=48)
    bad = write_image(root / "images" / "bad.jpg", seed=9, box=FACE)
    jp = write_labelme_json(bad, [FACE], width=64, height=48)
    data = json.loads(jp.read_text())
    data["shapes"].append({**data["shapes"][0], "points": [[1, 1], [5, 5], [9, 9]]})
    jp.write_text(json.dumps(data))
    return root


def test_an_image_with_a_broken_shape_is_rejected_not_kept_with_its_other_boxes(broken):
    ds = load_dataset(broken)
    jp = broken / "images" / "bad.json"
    assert [s.image_id for s in ds.samples] == ["good0.jpg", "good1.jpg", "good2.jpg"]
    assert ds.rejected == [jp]
    assert [(i.file, i.field, i.message) for i in ds.rejected_issues] == [
        (str(jp), "shapes[1].points", "rectangle needs 2 points, got 3")]
    assert refuse_rejected(ds, skip_errors=True) == [jp]


def test_several_rejected_images_are_listed_one_line_each(broken):
    jp2 = broken / "images" / "good2.json"
    jp2.write_text(jp2.read_text().replace('"label": "face"', '"label": 7'))
    with pytest.raises(RejectedImages) as info:
        refuse_rejected(load_dataset(broken), skip_errors=False)
    assert str(info.value) == (
        "2 annotated images have errors in their labelme JSON and cannot be used: fix them (`datatool validate` "
        "lists every problem) or pass --skip-errors to leave them out:\n"
        f"  {broken / 'images' / 'bad.json'}: shapes[1].points: rectangle needs 2 points, got 3\n"
        f"  {jp2}: shapes[0].label: expected a string, got 7")
    assert len(info.value.issues) == 2


def _named(output: str, broken: Path) -> bool:
    return ("left out 1 annotated image(s) whose JSON has errors (--skip-errors): "
            f"{broken / 'images' / 'bad.json'}\n") in output


def test_augment_skip_errors_leaves_the_image_out_and_names_it(broken, tmp_path):
    out = tmp_path / "aug"
    result = CliRunner().invoke(cli, ["augment", str(broken), "--out", str(out), "--factor", "1", "--workers", "1",
                                      "--skip-errors"])
    assert result.exit_code == 0, result.output
    assert _named(result.output, broken)
    assert not list((out / "images").glob("bad*"))  # neither an original nor a variant, so never a negative
    assert "0 source(s) kept negative" in result.output
    assert json.loads((out / "dataset.json").read_text())["counts"]["rejected_skipped"] == 1


def test_split_skip_errors_leaves_the_image_out_and_lists_it(broken, tmp_path):
    from datatool.split import split

    summary = split(broken, out=tmp_path / "tf", seed=0, progress=False, skip_errors=True)
    assert sum(c["images"] for c in summary.counts.values()) == 3
    assert sum(c["negatives"] for c in summary.counts.values()) == 0
    assert [(i.file, i.code) for i in summary.excluded] == [(str(broken / "images" / "bad.json"), "bad-points")]
    assert "bad.json,excluded" in (tmp_path / "tf" / "split.csv").read_text()


def test_stats_counts_no_negative_for_a_broken_image(broken, tmp_path):
    result = CliRunner().invoke(cli, ["stats", str(broken), "--json", str(tmp_path / "s.json"), "--skip-errors"])
    assert result.exit_code == 0, result.output
    assert _named(result.output, broken)
    stats = json.loads((tmp_path / "s.json").read_text())
    assert (stats["images"], stats["labeled"], stats["negatives"], stats["faces"]) == (3, 3, 0, 3)
    assert stats["rejected"] == [str(broken / "images" / "bad.json")]


def test_crop_skip_errors_crops_the_others_and_names_it(broken, tmp_path):
    result = CliRunner().invoke(cli, ["crop", str(broken), "--person", "alice", "--out", str(tmp_path / "c"),
                                      "--min-face", "0", "--skip-errors"])
    assert result.exit_code == 0, result.output
    assert "left out 1 annotated image(s) whose JSON has errors (--skip-errors): images/bad.json\n" in result.output
    assert sorted(p.name for p in (tmp_path / "c").rglob("*.jpg")) == ["good0_0.jpg", "good1_0.jpg", "good2_0.jpg"]


@pytest.mark.parametrize("recipe", [[], ["--recipe", "light"]], ids=["images", "recipe"])
def test_preview_skip_errors_never_draws_the_broken_image(broken, tmp_path, recipe):
    result = CliRunner().invoke(cli, ["preview", str(broken), "--grid", str(tmp_path / "g.png"), "--n", "8",
                                      "--skip-errors", *recipe])
    assert result.exit_code == 0, result.output
    assert _named(result.output, broken)
    assert (tmp_path / "g.png").is_file()


def test_validate_still_reports_every_issue_of_the_file(broken):
    from datatool.validate import validate

    report = validate(broken, near_dup_distance=None, quality=None)
    assert [(i.field, i.code) for i in report.issues if i.file == str(broken / "images" / "bad.json")] == [
        ("shapes[1].points", "bad-points")]
    assert report.has_errors
