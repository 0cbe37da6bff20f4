"""`datatool inspect`: TFRecords read back through the schema, bad records named by shard and index."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import write_image
from datatool.inspect import draw_tfrecord_grid, inspect_tfrecords
from datatool.core.tfrecord import SPLITS, shard_name


def write_shard(path: Path, records: list[dict], tmp_path: Path) -> Path:
    """A shard of hand-made records: each dict has group, boxes (pixels on 32x24), and optional
    `encoded` bytes (default: a real JPEG) or `claim` (width, height) to lie about the size."""
    import tensorflow as tf

    from datatool.core.images import encode_jpeg, load_rgb
    from datatool.core.sample import Box, Sample
    from datatool.core.tfrecord import to_example

    img = write_image(tmp_path / "src.jpg", 32, 24)
    jpeg = encode_jpeg(load_rgb(img))
    with tf.io.TFRecordWriter(str(path)) as w:
        for k, r in enumerate(records):
            s = Sample(image_path=img, width=32, height=24, boxes=tuple(Box(*b) for b in r.get("boxes", ())),
                       image_id=r.get("id", f"{path.stem}/{k}.jpg"), group=r["group"])
            width, height = r.get("claim", (32, 24))
            w.write(to_example(s, r.get("encoded", jpeg), width=width, height=height).SerializeToString())
    return path


def test_counts_match_what_split_recorded(detection_tfrecords):
    report = inspect_tfrecords(detection_tfrecords, progress=False)
    record = json.loads((detection_tfrecords / "dataset.json").read_text())
    assert report.ok, report.to_dict()
    for name in SPLITS:
        got = report.splits[name]
        want = record["counts"][name]
        assert (got.records, got.faces, got.negatives, len(got.groups)) == (
            want["images"], want["faces"], want["negatives"], want["groups"])
        assert got.shards == record["shards"][name]


def test_identity_counts_per_person(identity_tfrecords):
    report = inspect_tfrecords(identity_tfrecords, progress=False)
    assert report.labels == ["alice", "bob", "carol"]
    assert sum(sum(c.identities.values()) for c in report.splits.values()) == 60
    assert report.splits["train"].identities == {"alice": 14, "bob": 14, "carol": 14}
    assert all(c.negatives == 0 for c in report.splits.values())  # identity crops are not "negatives"


def _garbage_image(ex):
    ex.features.feature["image/encoded"].bytes_list.value[:] = [b"not an image at all"]


def _wrong_size(ex):
    ex.features.feature["image/width"].int64_list.value[:] = [64]


def _box_out_of_range(ex):  # to_example clips, so only a foreign writer makes this
    ex.features.feature["image/object/bbox/xmax"].float_list.value[:] = [1.7]


def _missing_height(ex):
    del ex.features.feature["image/height"]


@pytest.mark.parametrize("spoil,index,message,readable", [
    (_garbage_image, 2, "Unknown image file format", 4),  # image/encoded is not an image
    (_wrong_size, 1, "decodes to 32x24", 5),  # image/width lies
    (_box_out_of_range, 3, "outside [0, 1]", 5),  # a box past the right edge
    (_missing_height, 0, "image/height (data type: int64) is required", 4),  # a required key is missing
])
def test_a_bad_record_is_reported_by_shard_and_index(tmp_path, spoil, index, message, readable):
    import tensorflow as tf

    tfdir = tmp_path / "tf"
    tfdir.mkdir()
    shard = write_shard(tfdir / shard_name("train", 0, 1), [{"group": f"g{k}", "boxes": [(2, 2, 10, 10)]}
                                                            for k in range(5)], tmp_path)
    raw = [bytes(r) for r in tf.data.TFRecordDataset(str(shard)).as_numpy_iterator()]
    ex = tf.train.Example.FromString(raw[index])
    spoil(ex)
    raw[index] = ex.SerializeToString()
    with tf.io.TFRecordWriter(str(shard)) as w:
        for r in raw:
            w.write(r)
    report = inspect_tfrecords(tfdir, progress=False)
    assert not report.ok
    assert [(b.shard, b.index) for b in report.bad] == [("train-00000-of-00001.tfrecord", index)]
    assert message in report.bad[0].message
    assert report.splits["train"].records == readable


def test_truncated_shard_is_reported_not_raised(detection_tfrecords, tmp_path):
    tfdir = tmp_path / "tf"
    shutil.copytree(detection_tfrecords, tfdir)
    shard = tfdir / "val-00000-of-00001.tfrecord"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    report = inspect_tfrecords(tfdir, progress=False)
    (bad,) = report.bad
    assert bad.shard == shard.name and "unreadable" in bad.message
    assert 0 < report.splits["val"].records < 18 and report.splits["train"].records == 84


def test_a_group_in_two_splits_is_a_leak(tmp_path):
    tfdir = tmp_path / "tf"
    tfdir.mkdir()
    write_shard(tfdir / shard_name("train", 0, 1), [{"group": "a"}, {"group": "b"}], tmp_path)
    write_shard(tfdir / shard_name("val", 0, 1), [{"group": "b"}, {"group": "c"}], tmp_path)
    report = inspect_tfrecords(tfdir, progress=False)
    assert report.leaked_groups == {"b": ["train", "val"]}
    assert not report.ok and report.bad == []


def test_grid_draws_boxes_decoded_from_the_records(tmp_path):
    from datatool.core.images import load_rgb

    tfdir = tmp_path / "tf"
    tfdir.mkdir()
    write_shard(tfdir / shard_name("train", 0, 1), [{"group": "a", "boxes": [(4, 4, 28, 20)]}], tmp_path)
    grid = tmp_path / "grid.png"
    assert draw_tfrecord_grid(tfdir, grid, n=4, cell=128) == 1
    sheet = load_rgb(grid)
    green = np.all(np.abs(sheet.astype(int) - (0, 200, 83)) < 40, axis=-1)  # the first box colour
    ys, xs = np.nonzero(green)
    # box spans x 4..28 of 32 px -> 16..112 of the 128 px cell (cell starts below an 18 px title)
    assert xs.min() == pytest.approx(16, abs=3) and xs.max() == pytest.approx(111, abs=3)


def test_cli_inspect_exit_codes_and_json(detection_tfrecords, tmp_path):
    from datatool.cli import cli

    result = CliRunner().invoke(cli, ["inspect", str(detection_tfrecords), "--json", str(tmp_path / "r.json"),
                                      "--grid", str(tmp_path / "g.jpg"), "--n", "6"])
    assert result.exit_code == 0, result.output
    assert "all records decode" in result.output and "wrote" in result.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["ok"] and data["splits"]["val"]["records"] == 18
    assert (tmp_path / "g.jpg").stat().st_size > 0

    bad = tmp_path / "bad"
    bad.mkdir()
    write_shard(bad / shard_name("test", 0, 1), [{"group": "x", "encoded": b"\xff\xd8junk"}], tmp_path)
    result = CliRunner().invoke(cli, ["inspect", str(bad)])
    assert result.exit_code == 1 and "test-00000-of-00001.tfrecord: record 0" in result.output


def test_cli_inspect_on_a_folder_without_shards(tmp_path):
    from datatool.cli import cli

    result = CliRunner().invoke(cli, ["inspect", str(tmp_path)])
    assert result.exit_code == 1 and "Error:" in result.output and "no {train,val,test}" in result.output
