"""`datatool augment` / `preview`: reproducible variants, boxes through known transforms, negatives,
recipe errors, resume and no-overwrite. Real Albumentations, real files, tiny images."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import write_image, write_labelme_json
from datatool.augment import (MANIFEST_COLUMNS, augment_dataset, augment_image, build_pipeline, list_recipes,
                              load_recipe, read_manifest, variant_seed)
from datatool.cli import cli
from datatool.core.errors import DatatoolError, OutputExistsError, RecipeError
from datatool.formats.labelme import read_labelme
from datatool.core.images import sha256_file
from datatool.core.sample import Box

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "files" / "recipes" / "golden.yaml"
# The recipe hash enters every variant's seed: if Albumentations serializes the golden pipeline
# differently, this changes and earlier augment runs can no longer be reproduced byte for byte.
GOLDEN_SHA256 = "8a6d85acde5c5ff71e6d426bea95c3f632515132529020f137265b3b78cd1946"


def write_recipe(path: Path, transforms, *, facekit=None, min_visibility=0.3) -> Path:
    """An A.save YAML recipe for `transforms`, with an optional `facekit:` block."""
    import albumentations as A
    import yaml

    compose = A.Compose(transforms, bbox_params=A.BboxParams(
        format="pascal_voc", label_fields=["box_index"], min_visibility=min_visibility, clip=True))
    buf = io.StringIO()
    A.save(compose, buf, data_format="yaml")
    text = buf.getvalue() + (yaml.safe_dump({"facekit": facekit}) if facekit else "")
    path.write_text(text)
    return path


def digests(root: Path) -> dict[str, str]:
    """sha256 of every file under root except the provenance record (which names the worker count)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "dataset.json"}


def one_face_dataset(root: Path, box=(10, 5, 30, 25), *, width=64, height=48, extra=None) -> Path:
    img = write_image(root / "images" / "a.jpg", width, height, seed=1, box=box)
    write_labelme_json(img, [box], width=width, height=height, extra=extra)
    return root


def test_workers_1_and_2_write_byte_identical_outputs(tiny_dataset, tmp_path):
    write_image(tiny_dataset / "people" / "alice" / "a1.jpg", seed=20)  # the people layout too
    outs = {}
    for w in (1, 2):
        s = augment_dataset(tiny_dataset, out=tmp_path / f"w{w}", recipe="heavy", factor=3, seed=7, workers=w)
        assert not s.errors
        outs[w] = digests(tmp_path / f"w{w}")
    assert outs[1] == outs[2]
    # 4 faces + 1 negative + 1 person, each: original + 3 variants (images have a JSON, people do not)
    assert sum(k.endswith(".jpg") for k in outs[1]) == 6 * 4
    assert sum(k.endswith(".json") for k in outs[1]) == 5 * 4
    rows = read_manifest(tmp_path / "w1" / "manifest.csv")
    assert [r["output"] for r in rows] == sorted(r["output"] for r in rows)
    assert list(rows[0]) == list(MANIFEST_COLUMNS)
    assert "people/alice/a1__aug0002.jpg" in {r["output"] for r in rows}


def test_a_pool_started_beside_another_thread_writes_the_same_bytes(tiny_dataset, tmp_path):
    # With another thread alive, forking is unsafe: the pool starts from a forkserver instead
    import threading

    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        threaded = augment_dataset(tiny_dataset, out=tmp_path / "t", recipe="heavy", factor=3, seed=7, workers=2)
    finally:
        stop.set()
        other.join()
    alone = augment_dataset(tiny_dataset, out=tmp_path / "a", recipe="heavy", factor=3, seed=7, workers=1)
    assert not threaded.errors and digests(threaded.out) == digests(alone.out)


def test_a_different_seed_gives_different_variants_and_a_rerun_the_same(tmp_path):
    src = one_face_dataset(tmp_path / "src")
    a = augment_dataset(src, out=tmp_path / "a", recipe="heavy", factor=2, seed=0, workers=1)
    b = augment_dataset(src, out=tmp_path / "b", recipe="heavy", factor=2, seed=0, workers=1)
    c = augment_dataset(src, out=tmp_path / "c", recipe="heavy", factor=2, seed=1, workers=1)
    assert digests(a.out) == digests(b.out)
    assert digests(a.out)["images/a__aug0000.jpg"] != digests(c.out)["images/a__aug0000.jpg"]


def test_variant_seed_depends_on_each_input():
    base = dict(recipe_sha256="r", image_sha256="i", variant=0, seed=0)
    seeds = {variant_seed(**base)} | {variant_seed(**{**base, k: v}) for k, v in
                                      [("recipe_sha256", "r2"), ("image_sha256", "i2"), ("variant", 1), ("seed", 1)]}
    assert len(seeds) == 5
    assert all(0 <= s < 2**32 for s in seeds)


@pytest.mark.parametrize("name", ["default", "light", "heavy"])
def test_augment_image_is_pure_and_leaves_its_input_alone(name):
    import numpy as np

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    before = rgb.copy()
    pipe = build_pipeline(load_recipe(name))
    boxes = (Box(10, 5, 30, 25),)
    runs = [augment_image(rgb, boxes, pipeline=pipe, seed=s) for s in (5, 6, 5)]
    assert np.array_equal(rgb, before)
    assert np.array_equal(runs[0].rgb, runs[2].rgb) and runs[0].boxes == runs[2].boxes


def test_transforms_of_a_recipe_fire_independently(tmp_path):
    import albumentations as A
    import numpy as np

    # Compose(seed=...) would give both flips the same random stream: always both or neither
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]))
    pipe = build_pipeline(recipe)
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[0, 0] = 255  # a marker: the corner it lands in tells which flips ran
    corners = [tuple(np.argwhere(augment_image(rgb, pipeline=pipe, seed=s).rgb[:, :, 0] == 255)[0])
               for s in range(400)]
    share = {c: corners.count(c) / 400 for c in [(0, 0), (0, 7), (7, 0), (7, 7)]}
    assert all(0.18 < v < 0.32 for v in share.values()), share


@pytest.mark.parametrize("transform,box,expected", [
    # horizontal flip on a 64-wide image: x -> 64 - x
    ("HorizontalFlip", (10, 5, 30, 25), (34, 5, 54, 25)),
    # vertical flip on a 48-high image: y -> 48 - y
    ("VerticalFlip", (10, 5, 30, 25), (10, 23, 30, 43)),
    # crop at (8, 4): the box shifts by the crop origin
    ("Crop8_4_40_36", (10, 5, 30, 25), (2, 1, 22, 21)),
    # crop through the box: clipped to the crop, still half visible (>= min_visibility 0.3)
    ("Crop0_0_40_48", (30, 5, 50, 25), (30, 5, 40, 25)),
])
def test_a_known_box_through_a_known_transform(transform, box, expected, tmp_path):
    import albumentations as A

    t = (A.Crop(*map(int, transform[4:].split("_")), p=1.0) if transform.startswith("Crop")
         else getattr(A, transform)(p=1.0))
    recipe = write_recipe(tmp_path / "r.yaml", [t])
    src = one_face_dataset(tmp_path / "src", box=box)
    s = augment_dataset(src, out=tmp_path / "out", recipe=recipe, factor=1, workers=1)
    out = read_labelme(s.out / "images" / "a__aug0000.json")
    assert [b.xyxy for b in out.boxes] == [pytest.approx(expected)]
    assert out.group == sha256_file(src / "images" / "a.jpg")
    from PIL import Image
    with Image.open(s.out / "images" / "a__aug0000.jpg") as im:
        assert im.size == (out.width, out.height)


def test_outputs_keep_the_source_group_and_session(tmp_path):
    src = one_face_dataset(tmp_path / "src", extra={"facekit": {"group": "g1", "session": "s1"}})
    s = augment_dataset(src, out=tmp_path / "out", recipe="light", factor=1, workers=1)
    for name in ("a.json", "a__aug0000.json"):
        sample = read_labelme(s.out / "images" / name)
        assert (sample.group, sample.attributes["session"]) == ("g1", "s1")


def test_outputs_open_in_labelme(tmp_path):
    from labelme._label_file import LabelFile

    src = one_face_dataset(tmp_path / "src")
    s = augment_dataset(src, out=tmp_path / "out", recipe="default", factor=1, workers=1)
    variant = read_labelme(s.out / "images" / "a__aug0000.json")
    lf = LabelFile(str(s.out / "images" / "a__aug0000.json"))  # labelme's own reader, which loads the image
    assert len(lf.image_data) > 0 and lf.image_path == "a__aug0000.jpg"
    assert [[tuple(p) for p in sh["points"]] for sh in lf.shapes] == [[b.xyxy[:2], b.xyxy[2:]] for b in variant.boxes]
    assert lf.other_data["facekit"]["group"] == variant.group  # kept when labelme saves the file again


# a crop that always removes a face at x 0..20 (min_visibility 0.3)
CROP_AWAY = {"x_min": 40, "y_min": 0, "x_max": 64, "y_max": 48}


@pytest.mark.parametrize("facekit,files,made_negative,dropped,redraws", [
    # the recipe keeps face-less variants as negatives: each is written with no shapes
    ({"on_empty": "negative"}, 2, 2, 0, 0),
    # redraw twice, then give up: nothing written, each variant counted as dropped
    ({"on_empty": "redraw", "max_redraws": 2}, 0, 0, 2, 4),
])
def test_a_variant_whose_face_was_cropped_out(facekit, files, made_negative, dropped, redraws, tmp_path):
    import albumentations as A

    recipe = write_recipe(tmp_path / "r.yaml", [A.Crop(**CROP_AWAY, p=1.0)], facekit=facekit)
    src = one_face_dataset(tmp_path / "src", box=(0, 5, 20, 25))
    s = augment_dataset(src, out=tmp_path / "out", recipe=recipe, factor=2, workers=1, keep_originals=False)
    variants = sorted((s.out / "images").glob("a__aug*.json"))
    assert len(variants) == files
    assert all(read_labelme(v).boxes == () for v in variants)
    assert (s.counts["negatives_made"], s.counts["dropped"], s.counts["redraws"]) == (made_negative, dropped, redraws)
    assert len(read_manifest(s.manifest)) == files


def test_redraw_keeps_only_variants_with_a_face(tmp_path):
    import albumentations as A

    # cuts up to 90% off the left: the face at the left edge is often lost and must be redrawn
    cut = A.RandomCropFromBorders(crop_left=0.9, crop_right=0.0, crop_top=0.0, crop_bottom=0.0, p=1.0)
    recipe = write_recipe(tmp_path / "r.yaml", [cut], facekit={"on_empty": "redraw", "max_redraws": 50})
    src = one_face_dataset(tmp_path / "src", box=(0, 5, 12, 25))
    s = augment_dataset(src, out=tmp_path / "out", recipe=recipe, factor=6, workers=1, keep_originals=False)
    assert s.counts["redraws"] > 0 and s.counts["variants"] == 6
    assert all(read_labelme(j).boxes for j in (s.out / "images").glob("*.json"))


def test_negative_sources_stay_negative(tiny_dataset, tmp_path):
    s = augment_dataset(tiny_dataset, out=tmp_path / "out", recipe="default", factor=2, workers=1)
    assert s.counts["negative_sources"] == 1 and s.counts["unlabeled_skipped"] == 1
    assert [read_labelme(p).boxes for p in sorted((s.out / "images").glob("neg_0*.json"))] == [(), (), ()]
    assert not list((s.out / "images").glob("unlabeled_0*"))


@pytest.mark.parametrize("text,message", [
    # a transform Albumentations does not know, with a suggestion
    ("transform:\n  __class_fullname__: Compose\n  transforms:\n  - {__class_fullname__: HorizontalFlipp, p: 1.0}\n",
     "transform.transforms[0].__class_fullname__: unknown transform 'HorizontalFlipp' (did you mean 'HorizontalFlip'?)"),
    # unbalanced bracket
    ("transform: [\n", "not valid YAML (line 2"),
    # YAML, but not an A.save file
    ("- just\n- a list\n", "transform: missing"),
    # a known transform with a parameter of the wrong type
    ("transform:\n  __class_fullname__: Compose\n  transforms:\n  - {__class_fullname__: HorizontalFlip, p: lots}\n",
     "transform.transforms[0] (HorizontalFlip): invalid parameters"),
    # nested lists are checked too
    ("transform:\n  __class_fullname__: Compose\n  transforms:\n  - __class_fullname__: OneOf\n    transforms: {a: 1}\n",
     "transform.transforms[0].transforms: expected a list"),
    # facekit options are checked
    ("transform: {__class_fullname__: Compose, transforms: []}\nfacekit: {on_empty: drop}\n",
     "facekit.on_empty: expected one of redraw, negative, got 'drop'"),
    ("transform: {__class_fullname__: Compose, transforms: []}\nfacekit: {colour: red}\n",
     "facekit.colour: unknown option"),
    ("transform: {__class_fullname__: Compose, transforms: []}\nfacekit: {max_redraws: -1}\n",
     "facekit.max_redraws: expected a non-negative integer"),
])
def test_recipe_errors_name_the_file_and_the_field(text, message, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    assert str(e.value).startswith(f"{path}: ")
    assert message in str(e.value)


@pytest.mark.parametrize("name,message", [
    # not shipped and not a file
    ("nope", "unknown recipe 'nope': shipped recipes are default, heavy, light"),
    # a path that does not exist
    ("missing/recipe.yaml", "missing/recipe.yaml: recipe file not found"),
])
def test_recipe_not_found(name, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(name)


def test_shipped_recipes_load_with_albumentations_and_match_their_generator():
    import random
    import warnings

    import albumentations as A
    import numpy as np

    assert {"default", "light", "heavy"} <= set(list_recipes())
    spec = importlib.util.spec_from_file_location("make_recipes", ROOT / "scripts" / "make_recipes.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    rgb = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    for name in ("default", "light", "heavy"):
        r = load_recipe(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # A.save writes RGBShift fields that A.load then ignores
            assert isinstance(A.load(str(r.path), data_format="yaml"), A.Compose)  # A.load ignores `facekit:`
        assert r.path.read_text() == make.recipe_text(name), f"{name}.yaml is stale: run scripts/make_recipes.py"
        # the file behaves exactly like the pipeline written in code
        in_code, from_file = getattr(make, name)(), build_pipeline(r)
        for seed in range(5):
            outs = []
            for pipe in (in_code, from_file):
                pipe.set_random_state(np.random.default_rng(seed), random.Random(seed))
                outs.append(pipe(image=rgb, bboxes=np.array([[10.0, 5, 40, 35]]), box_index=[0]))
            assert np.array_equal(outs[0]["image"], outs[1]["image"])
            assert np.allclose(outs[0]["bboxes"], outs[1]["bboxes"])
    assert load_recipe("heavy").on_empty == "negative" and load_recipe("default").on_empty == "redraw"


def test_golden_recipe_serialization_has_not_drifted():
    import albumentations as A

    golden = A.Compose([
        A.BBoxSafeRandomCrop(erosion_rate=0.0, p=0.5),
        A.HorizontalFlip(p=0.5),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
        A.RandomGamma(gamma_limit=(80, 120), p=0.3),
    ], bbox_params=A.BboxParams(format="pascal_voc", label_fields=["box_index"], min_visibility=0.5, clip=True))
    buf = io.StringIO()
    A.save(golden, buf, data_format="yaml")
    assert GOLDEN.read_text().startswith(buf.getvalue())
    r = load_recipe(GOLDEN)
    assert (r.sha256, r.on_empty, r.max_redraws) == (GOLDEN_SHA256, "redraw", 5)


def test_recipe_hash_ignores_formatting_but_not_parameters(tmp_path):
    import yaml

    data = yaml.safe_load(GOLDEN.read_text())
    (tmp_path / "flow.yaml").write_text("# a comment\n" + yaml.safe_dump(data, default_flow_style=True))
    data["transform"]["transforms"][1]["p"] = 0.6
    (tmp_path / "changed.yaml").write_text(yaml.safe_dump(data))
    assert load_recipe(tmp_path / "flow.yaml").sha256 == GOLDEN_SHA256
    assert load_recipe(tmp_path / "changed.yaml").sha256 != GOLDEN_SHA256


def test_resume_after_an_interruption_finishes_only_what_is_missing(tiny_dataset, tmp_path, monkeypatch):
    import datatool.core.fsutil as fsutil

    clean = augment_dataset(tiny_dataset, out=tmp_path / "clean", recipe="default", factor=3, workers=1)
    real, calls = fsutil.write_bytes_atomic, []

    def interrupted(path, data, **kw):  # Ctrl-C between a variant's JSON and its image
        if Path(path).suffix == ".jpg":
            calls.append(Path(path))
            if len(calls) == 6:
                raise KeyboardInterrupt
        return real(path, data, **kw)

    monkeypatch.setattr(fsutil, "write_bytes_atomic", interrupted)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        augment_dataset(tiny_dataset, out=out, recipe="default", factor=3, workers=1)
    monkeypatch.setattr(fsutil, "write_bytes_atomic", real)
    assert not list(out.rglob(".facekit-tmp-*"))
    assert not (out / "manifest.csv").exists()
    # The JSON is written first: the interrupted variant has its JSON but no image (not done), and
    # no image is ever left without its JSON (it would read as an unlabeled image).
    assert calls[-1].with_suffix(".json").exists() and not calls[-1].exists()
    assert all(p.with_suffix(".json").exists() for p in (out / "images").glob("*.jpg"))
    (out / "images" / "face_0__aug0001.jpg").unlink()  # also lose one finished variant
    (out / "images" / ".facekit-tmp-face_1__aug0000.jpg.x").write_bytes(b"half")  # left by a killed worker
    with pytest.raises(OutputExistsError, match="unfinished augment run: add --resume"):
        augment_dataset(tiny_dataset, out=out, recipe="default", factor=3, workers=1)
    with pytest.raises(DatatoolError, match="seed differ"):
        augment_dataset(tiny_dataset, out=out, recipe="default", factor=3, seed=1, workers=1, resume=True)
    s = augment_dataset(tiny_dataset, out=out, recipe="default", factor=3, workers=2, resume=True)
    assert digests(out) == digests(clean.out)
    total = 5 * 4  # 5 labeled sources x (original + 3 variants)
    done_before = len(calls) - 1 - 1  # images finished before the interruption, minus the one deleted
    assert (s.counts["resumed"], s.counts["variants"] + s.counts["originals"]) == (done_before, total)
    assert json.loads((out / "dataset.json").read_text())["complete"] is True


def test_refuses_a_non_empty_output_without_overwrite(tiny_dataset, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    result = CliRunner().invoke(cli, ["augment", str(tiny_dataset), "--out", str(out), "--factor", "1"])
    assert result.exit_code == 1 and "not empty" in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
    augment_dataset(tiny_dataset, out=out, factor=1, workers=1, overwrite=True)
    assert (out / "mine.txt").read_text() == "keep me" and (out / "manifest.csv").exists()


@pytest.mark.parametrize("out_rel", [
    # writing into the source's images folder would mix variants into the originals
    "ds/images/aug",
    # the source itself
    "ds",
])
def test_refuses_an_output_inside_the_source(tiny_dataset, out_rel):
    with pytest.raises(DatatoolError, match="must not be inside"):
        augment_dataset(tiny_dataset, out=tiny_dataset.parent / out_rel, factor=1, workers=1)


@pytest.mark.parametrize("names,keep,clash", [
    # a.jpg and a.png share the stem, so their variants share names
    (("a.jpg", "a.png"), False, r"a\.png: its output images/a__aug0000\.jpg would also be written for images/a\.jpg"),
    # an original named like a variant of another source (augmenting an augmented folder)
    (("a.jpg", "a__aug0001.jpg"), True, r"its output images/a__aug0001\.jpg would also be written"),
])
def test_two_sources_writing_the_same_output_are_refused(names, keep, clash, tmp_path):
    src = tmp_path / "src"
    for name in names:
        img = write_image(src / "images" / name, seed=1)
        write_labelme_json(img, [(1, 1, 9, 9)], width=64, height=48)
    with pytest.raises(DatatoolError, match=clash):
        augment_dataset(src, out=tmp_path / "out", factor=2, workers=1, keep_originals=keep)
    assert not (tmp_path / "out").exists()  # refused before writing anything


def test_a_corrupt_source_is_reported_and_the_rest_is_done(tiny_dataset, tmp_path):
    (tiny_dataset / "images" / "face_2.jpg").write_bytes(b"not a jpeg at all")
    result = CliRunner().invoke(cli, ["augment", str(tiny_dataset), "--out", str(tmp_path / "out"),
                                      "--factor", "1", "--workers", "1", "--no-keep-originals"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    # named by its path; the reason's wording is core.images' (tested there)
    assert f"Error: {tiny_dataset / 'images' / 'face_2.jpg'}: " in result.output
    assert len(list((tmp_path / "out" / "images").glob("*.json"))) == 4  # 3 faces + 1 negative


def test_cli_lists_and_shows_recipes():
    import yaml

    listed = CliRunner().invoke(cli, ["augment", "--list-recipes"])
    assert listed.exit_code == 0
    assert {line.split()[0] for line in listed.output.splitlines() if line and not line[0].isspace()} == {
        "default", "heavy", "light"}
    shown = CliRunner().invoke(cli, ["augment", "--show-recipe", "heavy"])
    assert shown.exit_code == 0
    assert yaml.safe_load(shown.stdout)["facekit"]["on_empty"] == "negative"


def test_cli_augment_then_preview(tiny_dataset, tmp_path):
    from PIL import Image

    out, grid = tmp_path / "aug", tmp_path / "grid.png"
    r = CliRunner().invoke(cli, ["augment", str(tiny_dataset), "--out", str(out), "--factor", "2", "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert "10 variants of 5 images + 5 originals" in r.output
    record = json.loads((out / "dataset.json").read_text())
    assert (record["factor"], record["counts"]["variants"], record["recipe"]["name"]) == (2, 10, "default")
    r = CliRunner().invoke(cli, ["preview", str(out), "--grid", str(grid), "--n", "5", "--cell", "64"])
    assert r.exit_code == 0, r.output
    with Image.open(grid) as im:
        assert im.size == (3 * 64, 2 * (64 + 18))  # 5 cells: 3 columns x 2 rows, each with a title strip
    r = CliRunner().invoke(cli, ["preview", str(out), "--grid", str(grid)])
    assert r.exit_code == 1 and "already exists" in r.output


def test_preview_marks_negatives_and_unlabeled_images(tiny_dataset, tmp_path):
    from datatool.augment.preview import write_preview

    p = write_preview(tiny_dataset, tmp_path / "g.png", n=16, cell=48)
    assert len(p.titles) == 6  # every image, since there are fewer than n
    assert "NEG neg_0.jpg" in p.titles and "UNLAB unlabeled_0.jpg" in p.titles
    assert (p.width, p.height) == (3 * 48, 2 * (48 + 18))


def test_preview_with_a_recipe_shows_the_variants_augment_writes(tmp_path):
    import albumentations as A

    from datatool.augment.preview import preview_sheet

    recipe = write_recipe(tmp_path / "r.yaml", [A.HorizontalFlip(p=1.0)])
    src = one_face_dataset(tmp_path / "src", box=(0, 0, 20, 48))
    sheet, titles, _ = preview_sheet(src, n=2, cell=64, recipe=recipe)
    assert titles == ("a #0", "a #1")
    # the face (bright, left edge) was flipped to the right edge of each 64x48 cell
    cell = sheet[18 + 8:18 + 8 + 48, :64].astype(int)
    assert cell[:, 50:60].mean() > cell[:, 2:12].mean() + 50


def test_ctrl_c_with_a_pool_leaves_only_whole_files_and_resume_finishes(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    src = tmp_path / "src"
    # many sources: the pool hands out a few at a time, so at the first JSON most are still waiting
    for k in range(24):
        img = write_image(src / "images" / f"f{k}.jpg", 160, 120, seed=k, box=(20, 15, 80, 75))
        write_labelme_json(img, [(20, 15, 80, 75)], width=160, height=120)
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", "from datatool.cli import main; main()", "augment", str(src), "--out", str(out),
           "--factor", "10", "--workers", "2", "--recipe", "heavy"]
    # a terminal's Ctrl-C signals the whole process group: the command and its workers
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 60
    while not list((out / "images").glob("*__aug*.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()[-2000:]
    assert b"--resume" in err and b"Traceback" not in err, err.decode()[-3000:]
    assert not list(out.rglob(".facekit-tmp-*"))
    jsons = list((out / "images").glob("*__aug*.json"))
    assert 0 < len(jsons) < 24 * 10  # interrupted midway
    assert all(j.with_suffix(".jpg").exists() for j in jsons)
    done = subprocess.run(cmd + ["--resume"], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    clean = augment_dataset(src, out=tmp_path / "clean", recipe="heavy", factor=10, workers=1)
    assert digests(out) == digests(clean.out)


def test_people_variants_stay_with_their_original_in_an_identity_split(tmp_path):
    # people crops have no JSON: the group must travel in the variant's JPEG, or split would scatter them
    from datatool.core.provenance import capture_info
    from datatool.split import split

    src = tmp_path / "src"
    for person, seed in (("alice", 1), ("bob", 2)):
        for k in range(4):
            write_image(src / "people" / person / f"{k}.jpg", 32, 32, seed=seed * 10 + k)
    augment_dataset(src, out=tmp_path / "aug", factor=3, seed=0, workers=1)
    variant = tmp_path / "aug" / "people" / "alice" / "0__aug0000.jpg"
    assert capture_info(variant)["group"] == sha256_file(src / "people" / "alice" / "0.jpg")
    split(tmp_path / "aug", out=tmp_path / "tf", task="identity", ratios=(0.5, 0.25, 0.25), seed=0)
    rows = (tmp_path / "tf" / "split.csv").read_text().splitlines()
    header = rows[0].split(",")
    by_group: dict[str, set[str]] = {}
    for line in rows[1:]:
        rec = dict(zip(header, line.split(",")))
        by_group.setdefault(rec["group"], set()).add(rec["split"])
    assert len(by_group) == 8  # 8 originals, each with its 3 variants
    assert all(len(splits) == 1 for splits in by_group.values()), by_group


def test_a_recipe_cannot_run_code(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.yaml"
    # a Python tag (what yaml.load would execute) and a transform name that is not a transform
    path.write_text(f"transform: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(path)
    path.write_text("transform: {__class_fullname__: os.system, command: 'true'}\n")
    with pytest.raises(RecipeError, match="unknown transform 'os.system'"):
        load_recipe(path)
    assert not marker.exists()


def test_save_recipe_round_trips_through_load_recipe(tmp_path):
    import albumentations as A

    from datatool.augment import describe_recipe, save_recipe

    compose = A.Compose([A.HorizontalFlip(p=0.5)], bbox_params=A.BboxParams(format="pascal_voc"))
    path = save_recipe(compose, tmp_path / "mine.yaml", facekit={"on_empty": "negative", "max_redraws": 0})
    r = load_recipe(path)
    assert (r.on_empty, r.max_redraws, describe_recipe(r)) == ("negative", 0, "HorizontalFlip")
    with pytest.raises(OutputExistsError):
        save_recipe(compose, path)


def test_the_task_functions_make_exactly_the_files_augment_writes(tiny_dataset, tmp_path):
    # The per-source functions are the seam a distributed runner calls: pure, picklable in and
    # out, and what they return is byte for byte what the local runner writes.
    import pickle
    from concurrent.futures import ThreadPoolExecutor

    from datatool.augment import (ImageSource, PersonSource, Settings, augment_labelled_image,
                                  augment_person_crop)
    from datatool.core.provenance import stamp_jpeg
    from datatool.dataset import load_dataset

    crop = write_image(tmp_path / "c.jpg", 32, 32, seed=30).read_bytes()
    (tiny_dataset / "people" / "bob").mkdir(parents=True)
    (tiny_dataset / "people" / "bob" / "b.jpg").write_bytes(stamp_jpeg(crop, {"session": "s1", "person": "bob"}))
    recipe = load_recipe("heavy")
    s = augment_dataset(tiny_dataset, out=tmp_path / "out", recipe=recipe, factor=3, seed=4, workers=1)
    written = digests(s.out)

    settings = Settings.of(recipe, factor=3, seed=4, quality=95)
    pipeline = build_pipeline(recipe)
    made, rows = {}, []
    for sample in load_dataset(tiny_dataset).labeled:
        task = ImageSource(f"images/{sample.image_id}", Path(sample.image_path).read_bytes(), sample, (0, 1, 2))
        assert pickle.loads(pickle.dumps(task)) == task
        result = augment_labelled_image(task, settings=settings, pipeline=pipeline)
        assert pickle.loads(pickle.dumps(result)) == result
        again = augment_labelled_image(task, settings=settings, pipeline=build_pipeline(recipe))
        assert again == result  # pure: a fresh pipeline, the same bytes
        with ThreadPoolExecutor(1) as encoder:  # JPEGs encoded in another thread: the same bytes
            assert augment_labelled_image(task, settings=settings, pipeline=pipeline, encoder=encoder) == result
        for o in result.outputs:
            made[o.rel] = hashlib.sha256(o.image).hexdigest()
            made[o.rel.rsplit(".", 1)[0] + ".json"] = hashlib.sha256(o.json_text.encode()).hexdigest()
            rows.append(dict(o.row))
    person = PersonSource("people/bob/b.jpg", (tiny_dataset / "people" / "bob" / "b.jpg").read_bytes(),
                          {"session": "s1", "person": "bob"}, (0, 1, 2))
    result = augment_person_crop(person, settings=settings, pipeline=pipeline)
    assert all(o.json_text is None for o in result.outputs)
    with ThreadPoolExecutor(1) as encoder:
        assert augment_person_crop(person, settings=settings, pipeline=pipeline, encoder=encoder) == result
    for o in result.outputs:
        made[o.rel] = hashlib.sha256(o.image).hexdigest()
        rows.append(dict(o.row))
    assert made == {k: v for k, v in written.items() if k != "manifest.csv"}
    assert sorted((str(r["output"]), str(r["seed"])) for r in rows) == sorted(
        (r["output"], r["seed"]) for r in read_manifest(s.out / "manifest.csv"))


def test_a_task_with_nothing_to_make_decodes_nothing(tiny_dataset):
    from datatool.augment import ImageSource, Settings, augment_labelled_image
    from datatool.dataset import load_dataset

    sample = load_dataset(tiny_dataset).labeled[0]
    # --resume found everything done: a corrupt file is not even decoded, the source still counts
    task = ImageSource("images/x.jpg", b"not an image", sample, (), original=False)
    result = augment_labelled_image(task, settings=Settings("r"), pipeline=None)
    assert (result.outputs, result.counts["sources"]) == ((), 1)
    with pytest.raises(DatatoolError, match=r"^images/x\.jpg: "):  # the error names the source
        augment_labelled_image(ImageSource("images/x.jpg", b"not an image", sample, (0,)),
                               settings=Settings("r"), pipeline=None)
