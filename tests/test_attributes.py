"""One labelme file, one set of box attributes, whichever stage reads it.

A WIDER-style shape description (`blur=1 pose=0`) is decoded once, by the labelme parser, so
convert, augment and split (and every other consumer of `load_dataset`) see `{"blur": 1, "pose":
0}`, and the labelme writer puts the same words back.
"""

from __future__ import annotations

import json

import pytest

from conftest import write_image, write_labelme_json

EXPECTED = {"blur": 1, "pose": 0}


@pytest.fixture
def described(tmp_path):
    """A dataset of one face whose shape carries a WIDER-style description."""
    root = tmp_path / "ds"
    img = write_image(root / "images" / "a.jpg", 64, 48, box=(10, 8, 40, 38))
    jp = write_labelme_json(img, [(10, 8, 40, 38)], width=64, height=48)
    data = json.loads(jp.read_text())
    data["shapes"][0]["description"] = "blur=1 pose=0"
    jp.write_text(json.dumps(data))
    return root


def _attributes(samples):
    return [dict(b.attributes) for s in samples for b in s.boxes]


def test_convert_augment_and_split_see_the_same_attributes(described, tmp_path):
    from datatool.convert import convert
    from datatool.dataset import load_dataset, read_labelme_folder
    from datatool.split import plan_split

    assert _attributes(load_dataset(described).samples) == [EXPECTED]

    # convert: what its reader hands on, and what a labelme round trip writes and reads back
    out = tmp_path / "converted"
    convert(described, out, src_format="labelme", dst_format="labelme")
    assert _attributes(read_labelme_folder(described)) == [EXPECTED]
    assert _attributes(read_labelme_folder(out)) == [EXPECTED]
    written = json.loads((out / "images" / "a.json").read_text())
    assert written["shapes"][0]["description"] == "blur=1 pose=0"  # labelme users still see the words

    # augment: every variant's box keeps them (the light recipe keeps the face in the frame)
    from datatool.augment.run import augment_dataset

    augment_dataset(described, out=tmp_path / "aug", factor=2, recipe="light", seed=0, workers=1)
    variants = load_dataset(tmp_path / "aug").samples
    assert len(variants) == 3 and _attributes(variants) == [EXPECTED] * 3

    # split: records hold no box attributes, so the samples it plans with are what it sees
    plan = plan_split(described, ratios=(1, 0, 0))
    assert _attributes(it.sample for items in plan.per_split.values() for it in items) == [EXPECTED]


@pytest.mark.parametrize("description,attributes", [
    ("blur=1 pose=0", {"blur": 1, "pose": 0}),  # WIDER's words become numbers
    ("score=0.75 source=mtcnn", {"score": 0.75, "source": "mtcnn"}),  # float and word values
    ("x=1.50", {"x": "1.50"}),  # kept as text, so writing it back gives the same word
    ("prelabel haar 0.95", {"description": "prelabel haar 0.95"}),  # free text stays a description
    ("group_id=3", {"description": "group_id=3"}),  # labelme's own field names are not taken from text
])
def test_description_decodes_once_and_encodes_back(description, attributes):
    from datatool.formats import labelme

    shape = {"label": "face", "points": [[1, 1], [5, 5]], "shape_type": "rectangle", "description": description}
    assert labelme.shape_attributes(shape) == attributes
    assert labelme.encode_description(attributes) == description
