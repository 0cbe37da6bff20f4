"""`datatool split`: grouped, stratified, deterministic TFRecords, checked by reading the files back."""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import make_face_dataset, write_image, write_labelme_json
from datatool.core.errors import DatatoolError, ImageError, OutputExistsError
from datatool.split import assign_splits, parse_ratios, split
from datatool.core.tfrecord import SPLITS, list_shards


def read_back(tfdir: Path) -> dict[str, list[dict]]:
    """Every record of every split, parsed through the schema with tf.data (numpy values)."""
    import tensorflow as tf

    from datatool.core.tfrecord import decode_image, parse_example

    out = {}
    for name in SPLITS:
        files = [str(p) for p in list_shards(tfdir, name)]
        out[name] = []
        if not files:
            continue
        ds = tf.data.TFRecordDataset(files).map(parse_example).map(lambda p: {**p, "image": decode_image(p["encoded"])})
        for rec in ds.as_numpy_iterator():
            out[name].append(rec)
    return out


def csv_rows(tfdir: Path) -> list[dict]:
    with open(tfdir / "split.csv", newline="") as f:
        return list(csv.DictReader(f))


def make_augmented(root: Path, *, originals: int = 30, seed: int = 1) -> Path:
    """Like `augment` output: 1-5 variants per original share its group; every 4th original is a negative;
    variants of the same original share a capture session with the next original (for --group-by session)."""
    rng = np.random.default_rng(seed)
    images = root / "images"
    for g in range(originals):
        negative = g % 4 == 0
        for v in range(int(rng.integers(1, 6))):
            path = images / f"o{g:03d}_v{v}.jpg"
            box = None if negative else (10 + v, 8, 40 + v, 36)
            write_image(path, 64, 48, seed=g * 10 + v, box=box)
            write_labelme_json(path, [] if negative else [box], width=64, height=48,
                               extra={"facekit": {"group": f"grp{g:03d}", "session": f"sess{g // 2}"}})
    return root


# ------------------------------------------------------------------------------ ratios + assignment

@pytest.mark.parametrize("text,expected", [
    ("0.7,0.15,0.15", (0.7, 0.15, 0.15)),  # the default
    ("70,15,15", (0.7, 0.15, 0.15)),  # percentages
    ("1,0,0", (1.0, 0.0, 0.0)),  # everything in train
    ((0.8, 0.1, 0.1), (0.8, 0.1, 0.1)),  # a sequence from the library API
])
def test_parse_ratios_accepts(text, expected):
    assert parse_ratios(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", [
    "0.7,0.3",  # two values
    "a,b,c",  # not numbers
    "0.9,0.2,-0.1",  # negative
    "0.5,0.2,0.2",  # sums to 0.9
])
def test_parse_ratios_rejects_with_the_option_name(text):
    with pytest.raises(DatatoolError, match="--ratios"):
        parse_ratios(text)


def _units(sizes, strata=None):
    return {f"u{i:03d}": ((strata[i] if strata else "face"), s) for i, s in enumerate(sizes)}


@pytest.mark.parametrize("sizes,strata", [
    ([1] * 120, None),  # one image per group
    ([1] * 96 + [1] * 24, ["face"] * 96 + ["negative"] * 24),  # 20% negatives
    ([(i % 5) + 1 for i in range(60)], None),  # augmented: 1-5 variants per original
    ([(i % 7) + 1 for i in range(50)], [("negative" if i % 4 == 0 else "face") for i in range(50)]),  # both
    ([30] * 20, None),  # equal big groups (factor 30)
])
def test_assignment_sizes_within_one_group_of_the_ratios(sizes, strata):
    ratios = (0.7, 0.15, 0.15)
    result, warnings = assign_splits(_units(sizes, strata), ratios=ratios, seed=3)
    total, biggest = sum(sizes), max(sizes)
    got = Counter()
    for unit, name in result.items():
        got[name] += _units(sizes, strata)[unit][1]
    for k, name in enumerate(SPLITS):
        assert abs(got[name] - ratios[k] * total) <= biggest, (name, got, total)
    assert warnings == []


def test_assignment_gives_each_split_its_share_of_negatives():
    sizes = [1] * 200
    strata = ["negative" if i % 5 == 0 else "face" for i in range(200)]  # 40 negatives
    result, _ = assign_splits(_units(sizes, strata), ratios=(0.7, 0.15, 0.15), seed=0)
    negatives = Counter(result[f"u{i:03d}"] for i in range(200) if strata[i] == "negative")
    assert negatives == {"train": 28, "val": 6, "test": 6}


@pytest.mark.parametrize("n_units,expect_empty", [
    (3, 0),  # three single images: one per split
    (4, 0),  # four: train gets two
    (5, 0),  # five
    (2, 1),  # two groups cannot fill three splits: one empty split, with a warning
    (1, 2),  # one group: everything in train
])
def test_tiny_datasets_fill_every_split_when_possible(n_units, expect_empty):
    result, warnings = assign_splits(_units([1] * n_units), ratios=(0.7, 0.15, 0.15), seed=0)
    filled = set(result.values())
    assert len(filled) == min(3, n_units)
    assert len(warnings) == expect_empty
    assert all("empty" in w for w in warnings)


def test_assignment_is_deterministic_and_seed_dependent():
    units = _units([(i % 3) + 1 for i in range(80)])
    a, _ = assign_splits(units, ratios=(0.7, 0.15, 0.15), seed=7)
    b, _ = assign_splits(dict(reversed(list(units.items()))), ratios=(0.7, 0.15, 0.15), seed=7)  # listing order
    c, _ = assign_splits(units, ratios=(0.7, 0.15, 0.15), seed=8)
    assert a == b
    assert a != c


# ------------------------------------------------------------------------------ from the files

def test_fixture_split_has_no_group_in_two_splits_and_sensible_sizes(detection_tfrecords):
    records = read_back(detection_tfrecords)
    groups = {name: {r["group_id"] for r in recs} for name, recs in records.items()}
    assert not (groups["train"] & groups["val"]) and not (groups["train"] & groups["test"])
    assert not (groups["val"] & groups["test"])
    total = sum(len(r) for r in records.values())
    assert total == 120
    for name, ratio in zip(SPLITS, (0.7, 0.15, 0.15)):
        assert abs(len(records[name]) - ratio * total) <= 1  # every group is one image
    negatives = {name: sum(1 for r in recs if len(r["boxes"]) == 0) for name, recs in records.items()}
    all_neg = sum(negatives.values())
    for name, ratio in zip(SPLITS, (0.7, 0.15, 0.15)):
        assert abs(negatives[name] - ratio * all_neg) <= 1.5, negatives
    assert len(list_shards(detection_tfrecords, "train")) >= 2  # several files for a multi-worker reader


def test_fixture_record_and_csv_agree(detection_tfrecords):
    records = read_back(detection_tfrecords)
    from_files = {r["source_id"].decode(): (name, r["group_id"].decode(), len(r["boxes"]))
                  for name, recs in records.items() for r in recs}
    from_csv = {row["image_id"]: (row["split"], row["group"], int(row["faces"])) for row in csv_rows(detection_tfrecords)}
    assert from_files == from_csv
    record = json.loads((detection_tfrecords / "dataset.json").read_text())
    assert record["label_map"] == {"face": 1}
    for name in SPLITS:
        assert record["counts"][name]["images"] == len(records[name])
        assert record["counts"][name]["faces"] == sum(len(r["boxes"]) for r in records[name])
        assert all(list(r["box_labels"]) == [1] * len(r["boxes"]) for r in records[name])


@pytest.mark.parametrize("group_by", ["group", "session"])
def test_augmented_variants_stay_with_their_original(tmp_path, group_by):
    src = make_augmented(tmp_path / "aug")
    out = tmp_path / "tf"
    split(src, out=out, group_by=group_by, seed=0, progress=False)
    records = read_back(out)
    where = defaultdict(set)  # group (or session) -> splits it appears in, from the files
    sizes = Counter()
    for name, recs in records.items():
        for r in recs:
            key = r["group_id"].decode()
            if group_by == "session":
                key = f"sess{int(key[3:]) // 2}"
            where[key].add(name)
            sizes[key] += 1
    assert all(len(s) == 1 for s in where.values()), {k: v for k, v in where.items() if len(v) > 1}
    total = sum(sizes.values())
    for name, ratio in zip(SPLITS, (0.7, 0.15, 0.15)):
        assert abs(len(records[name]) - ratio * total) <= max(sizes.values())


def test_same_seed_gives_identical_csv_and_shard_bytes(tmp_path):
    src = make_augmented(tmp_path / "aug", originals=16)
    runs = {}
    for tag, seed in (("a", 5), ("b", 5), ("c", 6)):
        split(src, out=tmp_path / tag, seed=seed, shards=2, progress=False)
        runs[tag] = {p.name: p.read_bytes() for p in sorted((tmp_path / tag).glob("*")) if p.name != "dataset.json"}
    assert runs["a"] == runs["b"]
    assert runs["a"]["split.csv"] != runs["c"]["split.csv"]


def test_two_processes_write_the_same_shard_bytes(tmp_path):
    # Protobuf orders the entries of a map (an Example's features) by the process's hashing, so two
    # runs in one process agree even without deterministic serialization; two processes need it.
    import subprocess
    import sys

    src = make_augmented(tmp_path / "aug", originals=6)
    # and neither imports TensorFlow (its import alone is seconds and hundreds of MB a process)
    code = ("import atexit, sys; atexit.register(lambda: print('tensorflow imported:', 'tensorflow' in sys.modules)); "
            "from datatool.cli import main; main()")
    for tag in ("a", "b"):
        done = subprocess.run([sys.executable, "-c", code, "split", str(src), "--out", str(tmp_path / tag),
                               "--seed", "3", "--shards", "2"], check=True, capture_output=True, text=True)
        assert "tensorflow imported: False" in done.stdout, done.stdout + done.stderr
    shards = {tag: {p.name: p.read_bytes() for p in sorted((tmp_path / tag).glob("*.tfrecord"))} for tag in "ab"}
    assert len(shards["a"]) >= 3 and shards["a"] == shards["b"]


def test_records_and_files_are_the_bytes_tensorflow_writes(tmp_path):
    """split builds Examples and frames shards without TensorFlow (core.tfrecord): the message
    must serialize as tf.train.Example does, and the file must be what tf.io.TFRecordWriter writes."""
    import tensorflow as tf

    from datatool.core.sample import Box, Sample
    from datatool.core.tfrecord import RecordWriter, example_bytes

    sample = Sample(Path("a/b.jpg"), 64, 48, image_id="a/b.jpg", group="g1",
                    boxes=[Box(8, 6, 30, 30, "face"), Box(-4, 10, 80, 47, "face")])
    ours = [example_bytes(sample, b"\xff\xd8 jpeg", width=64, height=48),
            example_bytes(sample, b"x" * 300, width=32, height=24, identity=(2, "carol"), sha256="0" * 64)]
    for record in ours:
        # TensorFlow's class reads every field, and writes back the same bytes
        assert tf.train.Example.FromString(record).SerializeToString(deterministic=True) == record
    parsed = tf.train.Example.FromString(ours[1]).features.feature
    assert parsed["image/class/text"].bytes_list.value == [b"carol"]
    np.testing.assert_allclose(parsed["image/object/bbox/xmax"].float_list.value, [30 / 64, 1.0])

    records = ours + [b"", b"z" * 70000]
    with RecordWriter(tmp_path / "ours.tfrecord") as w:
        for r in records:
            w.write(r)
    with tf.io.TFRecordWriter(str(tmp_path / "tf.tfrecord")) as w:
        for r in records:
            w.write(r)
    assert (tmp_path / "ours.tfrecord").read_bytes() == (tmp_path / "tf.tfrecord").read_bytes()
    read = [r.numpy() for r in tf.data.TFRecordDataset(str(tmp_path / "ours.tfrecord"))]
    assert read == records


# ------------------------------------------------------------------------------ pixels and boxes

def _write_exif_rotated(path: Path, box, *, width=64, height=48):
    """A JPEG stored rotated with EXIF orientation 6: displayed (width x height) with a bright square at box."""
    from PIL import Image

    displayed = np.full((height, width, 3), 30, np.uint8)
    x0, y0, x1, y1 = box
    displayed[y0:y1, x0:x1] = 240
    stored = np.rot90(displayed, k=1)  # orientation 6 means: rotate 90 degrees clockwise to display
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(stored)).save(path, exif=exif, quality=95)
    return path


@pytest.mark.parametrize("max_side,fmt", [
    (None, "jpg"),  # rotation only: re-encoded upright
    (32, "jpg"),  # rotation and downscale: boxes are normalized so they carry over
])
def test_exif_rotated_photo_gets_its_box_on_the_face_after_tf_decode(tmp_path, max_side, fmt):
    from datatool.core.images import load_rgb

    images = tmp_path / "ds" / "images"
    images.mkdir(parents=True)
    box = (36, 10, 56, 30)  # on the image as displayed (64 wide, 48 high)
    img = _write_exif_rotated(images / f"phone.{fmt}", box)
    assert load_rgb(img).shape == (48, 64, 3)  # PIL sees it upright
    write_labelme_json(img, [box], width=64, height=48)
    out = tmp_path / "tf"
    summary = split(tmp_path / "ds", out=out, ratios=(1, 0, 0), max_side=max_side, progress=False)
    assert summary.reencoded == 1
    (rec,) = read_back(out)["train"]
    image = rec["image"]
    h, w = image.shape[:2]
    assert (w, h) == ((64, 48) if max_side is None else (32, 24))
    assert (rec["width"], rec["height"]) == (w, h)
    x0, y0, x1, y1 = (rec["boxes"][0] * [w, h, w, h]).round().astype(int)
    inside = image[y0 + 1:y1 - 1, x0 + 1:x1 - 1].mean()
    outside = np.concatenate([image[:, :max(x0 - 1, 1)].reshape(-1, 3), image[:, min(x1 + 1, w - 1):].reshape(-1, 3)]).mean()
    assert inside > 200 and outside < 60


@pytest.mark.parametrize("fmt,max_side,passthrough", [
    ("jpg", None, True),  # an upright JPEG goes in byte for byte
    ("jpg", 100, True),  # already small enough
    ("jpg", 32, False),  # too big: resized
    ("png", None, False),  # not a JPEG: re-encoded
])
def test_jpeg_passthrough_only_when_nothing_changes(tmp_path, fmt, max_side, passthrough):
    from datatool.split import prepare_image

    path = write_image(tmp_path / f"a.{fmt}", 64, 48, box=(4, 4, 20, 20))
    data, w, h, passed = prepare_image(path, max_side=max_side)
    assert passed is passthrough
    assert (data == path.read_bytes()) is passthrough
    assert data[:2] == b"\xff\xd8"  # always JPEG
    assert max(w, h) == (min(64, max_side) if max_side else 64)


@pytest.mark.parametrize("boxes", [
    [(10, 5, 30, 25)],  # one face
    [(0, 0, 64, 48), (40.5, 10.25, 50.75, 47)],  # whole image + fractional corners
    [],  # a negative
])
def test_round_trip_sample_example_tfdata_same_boxes(tmp_path, boxes):
    import tensorflow as tf

    from datatool.core.images import encode_jpeg, load_rgb
    from datatool.core.sample import Box, Sample
    from datatool.core.tfrecord import parse_example, to_example

    img = write_image(tmp_path / "a.jpg", 64, 48)
    sample = Sample(image_path=img, width=64, height=48, boxes=tuple(Box(*b) for b in boxes), image_id="x/a.jpg",
                    group="g1")
    encoded = encode_jpeg(load_rgb(img))
    path = tmp_path / "one.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as w:
        w.write(to_example(sample, encoded, width=64, height=48).SerializeToString())
    (rec,) = list(tf.data.TFRecordDataset([str(path)]).map(parse_example).as_numpy_iterator())
    back = rec["boxes"] * np.array([64, 48, 64, 48])
    assert back.shape == (len(boxes), 4)
    np.testing.assert_allclose(back, np.array(boxes, dtype=np.float64).reshape(-1, 4), atol=1e-4)
    assert rec["source_id"] == b"x/a.jpg" and rec["group_id"] == b"g1"


# ------------------------------------------------------------------------------ identity

def test_identity_records_carry_labels_matching_labels_txt(identity_tfrecords):
    labels = (identity_tfrecords / "labels.txt").read_text().splitlines()
    assert labels == ["alice", "bob", "carol"]
    records = read_back(identity_tfrecords)
    for name, recs in records.items():
        assert {r["class_text"].decode() for r in recs} == set(labels), name  # every person in every split
        for r in recs:
            person = r["source_id"].decode().split("/")[1]  # people/NAME/file.jpg
            assert r["class_text"].decode() == person
            assert labels[r["class_label"]] == person
            assert len(r["boxes"]) == 0
    assert sum(len(r) for r in records.values()) == 60
    record = json.loads((identity_tfrecords / "dataset.json").read_text())
    assert record["task"] == "identity" and record["label_map"] == {"alice": 0, "bob": 1, "carol": 2}


def test_identity_group_from_a_sidecar_json_keeps_variants_together(tmp_path):
    people = tmp_path / "ds" / "people"
    for person in ("ann", "ben"):
        for k in range(8):
            img = write_image(people / person / f"{k}.jpg", 32, 32, seed=k + (50 if person == "ben" else 0))
            (img.with_suffix(".json")).write_text(json.dumps({"shapes": [], "facekit": {"group": f"{person}{k // 4}"}}))
    split(tmp_path / "ds", out=tmp_path / "tf", task="identity", ratios=(0.5, 0.5, 0), progress=False)
    where = defaultdict(set)
    for name, recs in read_back(tmp_path / "tf").items():
        for r in recs:
            where[r["group_id"].decode()].add(name)
    assert sorted(where) == ["ann0", "ann1", "ben0", "ben1"]
    assert all(len(s) == 1 for s in where.values())


# ------------------------------------------------------------------------------ safety

def test_unlabeled_images_are_excluded_and_listed(tiny_dataset, tmp_path):
    out = tmp_path / "tf"
    summary = split(tiny_dataset, out=out, progress=False)
    records = read_back(out)
    ids = {r["source_id"].decode() for recs in records.values() for r in recs}
    assert "unlabeled_0.jpg" not in ids and len(ids) == 5
    assert [i.code for i in summary.excluded] == ["unlabeled"]
    rows = {r["image_id"]: r["split"] for r in csv_rows(out)}
    assert rows["unlabeled_0.jpg"] == "excluded"
    assert all(len(records[name]) >= 1 for name in SPLITS)  # 5 images still fill three splits


def test_size_mismatch_between_json_and_image_is_excluded_by_name(tmp_path):
    images = tmp_path / "ds" / "images"
    for k in range(3):
        img = write_image(images / f"ok{k}.jpg", 64, 48, seed=k)
        write_labelme_json(img, [(1, 1, 9, 9)], width=64, height=48)
    bad = write_image(images / "bad.jpg", 64, 48)
    write_labelme_json(bad, [(1, 1, 9, 9)], width=48, height=64)  # claims portrait
    summary = split(tmp_path / "ds", out=tmp_path / "tf", progress=False)
    (issue,) = summary.excluded
    assert issue.code == "size-mismatch" and issue.file.endswith("bad.json") and "imageWidth" in issue.field
    assert sum(c["images"] for c in summary.counts.values()) == 3


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


def test_corrupt_image_mid_way_leaves_no_shard_behind(tmp_path):
    src = make_face_dataset(tmp_path / "ds", n=40, negatives=0)
    victim = src / "images" / "img_0020.jpg"
    data = victim.read_bytes()
    victim.write_bytes(data[:len(data) * 3 // 4])  # truncated: the header still reads, the pixels do not
    out = tmp_path / "tf"
    with pytest.raises(ImageError, match="img_0020.jpg"):
        split(src, out=out, shards=3, workers=2, progress=False)
    assert not [n for n in _leftovers(out) if "tfrecord" in n], _leftovers(out)


def test_ctrl_c_mid_write_leaves_no_tfrecord(tmp_path, monkeypatch):
    import datatool.split as mod

    src = make_face_dataset(tmp_path / "ds", n=40)
    real, calls = mod.prepare_image, []

    def interrupted(path, **kw):
        calls.append(path)
        if len(calls) == 25:
            raise KeyboardInterrupt
        return real(path, **kw)

    monkeypatch.setattr(mod, "prepare_image", interrupted)
    out = tmp_path / "tf"
    with pytest.raises(KeyboardInterrupt):
        split(src, out=out, shards=2, workers=1, progress=False)
    assert _leftovers(out) == []


def test_refuses_a_non_empty_out_and_overwrite_drops_stale_shards(tiny_dataset, tmp_path):
    out = tmp_path / "tf"
    split(tiny_dataset, out=out, ratios=(1, 0, 0), shards=3, progress=False)
    assert [p.name for p in list_shards(out, "train")][-1] == "train-00002-of-00003.tfrecord"
    with pytest.raises(OutputExistsError, match="--overwrite"):
        split(tiny_dataset, out=out, progress=False)
    split(tiny_dataset, out=out, ratios=(1, 0, 0), shards=1, overwrite=True, progress=False)
    assert [p.name for p in list_shards(out, "train")] == ["train-00000-of-00001.tfrecord"]
    assert sum(len(r) for r in read_back(out).values()) == 5


# ------------------------------------------------------------------------------ CLI

@pytest.mark.parametrize("args,message", [
    (["--ratios", "0.5,0.5"], "--ratios"),  # two ratios
    (["--shards", "zero"], "--shards"),  # not a number
    (["--max-side", "4"], "--max-side"),  # too small to be an image
])
def test_cli_rejects_bad_options_with_a_clear_line(tiny_dataset, tmp_path, args, message):
    from datatool.cli import cli

    result = CliRunner().invoke(cli, ["split", str(tiny_dataset), "--out", str(tmp_path / "tf"), *args])
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output


def test_cli_split_prints_counts_and_refuses_to_overwrite(tiny_dataset, tmp_path):
    from datatool.cli import cli

    out = tmp_path / "tf"
    result = CliRunner().invoke(cli, ["split", str(tiny_dataset), "--out", str(out), "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "train" in result.output and "1 image(s) excluded" in result.output
    again = CliRunner().invoke(cli, ["split", str(tiny_dataset), "--out", str(out)])
    assert again.exit_code == 1 and "Error:" in again.output and "--overwrite" in again.output


@pytest.mark.parametrize("grouped,budget,reads", [
    (False, None, 1),  # hashed and written from one read
    (True, None, 1),  # a group given: read once, for the record
    (False, 0, 2),  # past the hand-over budget: read to hash, read again to write
    (True, 0, 2),  # past the budget with a group: the header, then the bytes to write
])
def test_each_image_is_read_from_disk_once_within_the_handover_budget(tmp_path, monkeypatch, grouped, budget,
                                                                       reads):
    import builtins

    import datatool.split as mod

    if budget is not None:
        monkeypatch.setattr(mod, "HANDOVER_BYTES", budget)

    root = tmp_path / "ds"
    for k in range(6):
        img = write_image(root / "images" / f"f{k}.jpg", 64, 48, seed=k)
        write_labelme_json(img, [(4, 4, 30, 30)], width=64, height=48,
                           extra={"facekit": {"group": f"g{k}"}} if grouped else None)
    opened = Counter()
    real_open = builtins.open

    def counting_open(file, *args, **kwargs):  # Path.read_bytes and the header probe both open here
        if str(file).endswith(".jpg"):
            opened[Path(file).name] += 1
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr("io.open", counting_open)
    split(root, out=tmp_path / "tf", ratios=(1, 0, 0), progress=False)
    assert opened == Counter({f"f{k}.jpg": reads for k in range(6)})
