"""`datatool stats`: what a dataset holds, as a table, JSON and PNG histograms."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from conftest import make_people_dataset, write_image, write_labelme_json
from datatool.core.errors import DatatoolError
from datatool.stats import PLOTS, dataset_stats, format_table, public, save_plots


def test_counts_of_the_tiny_dataset(tiny_dataset):
    s = dataset_stats(tiny_dataset)
    assert (s["images"], s["labeled"], s["unlabeled"], s["negatives"], s["faces"]) == (6, 5, 1, 1, 4)
    assert s["faces_per_image"] == {"0": 1, "1": 4}
    assert s["image_sizes"] == {"64x48": 6}
    assert s["box_width_px"]["min"] == 22 and s["box_height_px"]["max"] == 24


@pytest.mark.parametrize("boxes,key,expected", [
    ([(0, 0, 32, 24)], "box_center_x", 0.25),  # top-left quarter of a 64x48 image: centre x at 1/4
    ([(0, 0, 32, 24)], "box_center_y", 0.25),  # ... and centre y at 1/4
    ([(16, 12, 48, 36)], "box_relative_size", 0.5),  # half the width and height -> sqrt(1/4)
    ([(0, 0, 40, 20)], "box_aspect_w_over_h", 2.0),  # twice as wide as high
    ([(0, 0, 10, 10), (20, 20, 30, 40)], "box_aspect_w_over_h", 0.75),  # mean of 1.0 and 0.5
])
def test_box_distributions(tmp_path, boxes, key, expected):
    img = write_image(tmp_path / "ds" / "images" / "a.jpg", 64, 48)
    write_labelme_json(img, boxes, width=64, height=48)
    assert dataset_stats(tmp_path / "ds")[key]["mean"] == pytest.approx(expected)


def test_people_layout_counts_images_per_person(tmp_path):
    root = make_people_dataset(tmp_path / "ds", per_person=3, size=24)
    write_image(root / "people" / "dave" / "only.jpg", 24, 24)
    s = dataset_stats(root)
    assert s["people"] == {"alice": 3, "bob": 3, "carol": 3, "dave": 1}
    assert s["images"] == 0  # crops under people/ are not detection images
    assert "dave: 1" in format_table(s)


def test_table_names_the_numbers(tiny_dataset):
    table = format_table(dataset_stats(tiny_dataset))
    assert "labeled 5, unlabeled 1" in table
    assert "22 / 22 / 22" in table  # box width px: every box is 22 px wide
    assert "64x48: 6" in table


def test_plots_are_png_files_that_decode(tiny_dataset, tmp_path):
    from datatool.core.images import load_rgb

    written = save_plots(dataset_stats(tiny_dataset), tmp_path / "plots")
    assert sorted(p.name for p in written) == sorted(p for p in PLOTS if p != "people.png")
    for p in written:
        assert load_rgb(p).shape[0] > 100


def test_cli_stats_json_and_plots(tiny_dataset, tmp_path):
    from datatool.cli import cli

    result = CliRunner().invoke(cli, ["stats", str(tiny_dataset), "--json", str(tmp_path / "s.json"),
                                      "--plots", str(tmp_path / "plots")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "s.json").read_text())
    assert data == json.loads(json.dumps(public(dataset_stats(tiny_dataset))))
    assert "_values" not in data
    assert (tmp_path / "plots" / "box_size.png").is_file()


def test_missing_dataset_is_a_clear_error(tmp_path):
    from datatool.cli import cli

    with pytest.raises(DatatoolError, match="not found"):
        dataset_stats(tmp_path / "nope")
    result = CliRunner().invoke(cli, ["stats", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "Error:" in result.output and "Traceback" not in result.output
