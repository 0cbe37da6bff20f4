"""The datatool side of the recognition path, end to end through the CLI on generated photos:
labelme boxes named after people -> `crop --label-as-person` -> `validate` -> `split --task
identity` -> TFRecords read back with tf.data through the schema.

(The trainer's fit / predict on these records is tested with the trainer's identity work.)
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from datatool.cli import cli

PEOPLE = ("alice", "bob", "carol")
PAIRS = (("alice", "bob"), ("bob", "carol"), ("carol", "alice"))
FACE = 40  # px, side of each synthetic face
SLOTS = ((8, 24), (76, 28))  # top-left corners of the two faces in a 128x96 photo


def synthetic_face(name: str, rng) -> np.ndarray:
    """A FACE x FACE patch whose colour and texture identify the person (alice: reddish rows,
    bob: greenish columns, carol: bluish checks), with noise and brightness jitter."""
    yy, xx = np.mgrid[0:FACE, 0:FACE]
    color, mask = {
        "alice": ((200, 60, 60), (yy // 5) % 2),
        "bob": ((60, 190, 70), (xx // 5) % 2),
        "carol": ((60, 80, 210), ((xx // 7) + (yy // 7)) % 2),
    }[name]
    img = np.array(color, np.float32) * rng.uniform(0.8, 1.2) * (0.55 + 0.45 * mask[..., None])
    return np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)


def write_photos(root: Path, *, n: int = 18, seed: int = 0) -> dict[str, str]:
    """`n` 128x96 photos under root/images, each showing two people side by side (labelme boxes
    labelled with their names), plus a negative, an unlabeled photo and one box labelled just
    'face'. Returns {photo stem: sha256 of its bytes}."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = root / "images"
    images.mkdir(parents=True)
    shas = {}

    def photo(stem, faces, *, labelled=True):
        img = rng.integers(0, 80, size=(96, 128, 3), dtype=np.uint8)
        shapes = []
        for (x, y), name in faces:
            img[y:y + FACE, x:x + FACE] = synthetic_face(name if name in PEOPLE else "alice", rng)
            shapes.append({"label": name, "points": [[x, y], [x + FACE, y + FACE]], "group_id": None,
                           "description": "", "shape_type": "rectangle", "flags": {}, "mask": None})
        path = images / f"{stem}.jpg"
        Image.fromarray(img).save(path, quality=92)
        shas[stem] = hashlib.sha256(path.read_bytes()).hexdigest()
        if labelled:
            (images / f"{stem}.json").write_text(json.dumps({
                "version": "6.3.1", "flags": {}, "shapes": shapes, "imagePath": path.name, "imageData": None,
                "imageHeight": 96, "imageWidth": 128}))

    for k in range(n):
        photo(f"p{k:02d}", list(zip(SLOTS, PAIRS[k % len(PAIRS)])))
    photo("negative", [])
    photo("unlabeled", list(zip(SLOTS, PAIRS[0])), labelled=False)
    photo("generic", [(SLOTS[0], "face")])
    return shas


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def test_labelled_photos_to_identity_tfrecords(tmp_path):
    import tensorflow as tf

    from datatool.core.tfrecord import SPLITS, decode_image, list_shards, parse_example

    shas = write_photos(tmp_path / "photos")
    faces, tfdir = tmp_path / "faces", tmp_path / "tf"

    result = invoke("crop", tmp_path / "photos", "--out", faces, "--label-as-person", "--size", "48")
    assert result.exit_code == 0, result.output
    for name in PEOPLE:  # 18 photos x 2 faces, each person in 2 of the 3 pairs
        assert len(list((faces / "people" / name).glob("*.jpg"))) == 12
    assert "skipped 1 negative" in result.output and "skipped 1 unlabeled" in result.output
    assert "skipped 1 boxes labelled with no name" in result.output

    result = invoke("validate", faces)
    assert result.exit_code == 0, result.output
    assert "3 people (36 crops)" in result.output

    result = invoke("split", faces, "--out", tfdir, "--task", "identity", "--ratios", "0.6,0.2,0.2", "--seed", "0")
    assert result.exit_code == 0, result.output
    labels = (tfdir / "labels.txt").read_text().splitlines()
    assert labels == list(PEOPLE)

    split_of_group: dict[str, set] = defaultdict(set)
    per_split: Counter = Counter()
    for split in SPLITS:
        files = [str(p) for p in list_shards(tfdir, split)]
        for rec in tf.data.TFRecordDataset(files).map(parse_example):
            source_id = rec["source_id"].numpy().decode()  # people/NAME/<photo>_<box>.jpg
            _, person, fname = source_id.split("/")
            label, text = int(rec["class_label"]), rec["class_text"].numpy().decode()
            assert text == person and labels[label] == person
            photo_stem = fname.rsplit("_", 1)[0]
            group = rec["group_id"].numpy().decode()
            assert group == shas[photo_stem], f"{source_id}: group is not its photo's sha256"
            assert decode_image(rec["encoded"]).shape == (48, 48, 3)
            split_of_group[group].add(split)
            per_split[split] += 1
    assert sum(per_split.values()) == 36 and all(per_split[s] > 0 for s in SPLITS)
    assert len(split_of_group) == 18  # one group per photo, both of its crops...
    assert all(len(s) == 1 for s in split_of_group.values())  # ...in one split only

    result = invoke("inspect", tfdir)
    assert result.exit_code == 0, result.output  # no leak, every record decodes


@pytest.mark.parametrize("group_by", ["group", "session"])
def test_crops_of_one_photo_stay_together_for_either_grouping(tmp_path, group_by):
    from datatool.split import plan_split

    write_photos(tmp_path / "photos", n=9, seed=1)
    assert invoke("crop", tmp_path / "photos", "--out", tmp_path / "faces", "--label-as-person").exit_code == 0
    plan = plan_split(tmp_path / "faces", task="identity", ratios=(0.6, 0.2, 0.2), group_by=group_by)
    split_of_photo = defaultdict(set)
    for split, items in plan.per_split.items():
        for it in items:
            split_of_photo[Path(it.sample.image_id).stem.rsplit("_", 1)[0]].add(split)
    assert len(split_of_photo) == 9 and all(len(s) == 1 for s in split_of_photo.values())
