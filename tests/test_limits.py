"""Limits: decompression bombs refused from the header by every reader, YAML alias bombs refused,
and nothing written over without --overwrite (reports, pictures, the source, half-done outputs)."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

from bombfiles import header_bomb, zero_png
from conftest import write_image, write_labelme_json
from datatool.cli import cli
from datatool.core import images
from datatool.core.errors import DatatoolError, ImageError

SIDE = {"237": 15400, "900": 30000}  # 237,160,000 and 900,000,000 pixels
HINT = "refusing to decode it (set FACEKIT_MAX_PIXELS to raise the limit)"


def too_large(side: int | None = None) -> str:
    size = f"{side}x{side} " if side else ""
    return f"image {size}larger than 120000000 pixels, {HINT}"


# Pillow opens a header up to twice its limit and tells the size; above that it refuses to open
# and facekit words it without the size
EXPECTED = {"237": too_large(SIDE["237"]), "900": too_large()}


def _run(*args, exit_code: int):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    out = result.output
    assert result.exit_code == exit_code, out + repr(result.exception)
    assert "Traceback" not in out and "DecompressionBomb" not in out
    return out


def _bomb_dataset(root: Path, which: str, *, honest: bool = False) -> Path:
    """A dataset with one small labelled face and one labelled bomb PNG `images/big.png`. Its JSON
    claims 640x480 (a JSON stating the bomb's own size is refused from the JSON, before any image
    is opened: `test_a_json_stating_a_bomb_size_is_refused_from_the_json`), so the image's
    header is what each reader must refuse; `honest`: the JSON states the real size."""
    img = write_image(root / "images" / "ok.jpg", box=(8, 6, 30, 30))
    write_labelme_json(img, [(8, 6, 30, 30)], width=64, height=48)
    big = header_bomb(root / "images" / "big.png", SIDE[which], SIDE[which])
    side = SIDE[which] if honest else None
    write_labelme_json(big, [(10, 10, 100, 100)], width=side or 640, height=side or 480)
    return root


# --- the limit itself ------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["237", "900"])
def test_every_decoder_refuses_a_bomb_header_without_pillows_warning(tmp_path, which):
    path = header_bomb(tmp_path / "big.png", SIDE[which], SIDE[which])
    data = path.read_bytes()
    calls = [lambda: images.probe(path), lambda: images.load_rgb(path), lambda: images.verify(path),
             lambda: images.decode_rgb(data, name=str(path)), lambda: images.decode_gray(path),
             lambda: images.decode_gray_reduced(path), lambda: images.image_size(path)]
    for call in calls:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(ImageError) as info:
                call()
        assert str(info.value) == f"{path}: {EXPECTED[which]}"
        assert not [w for w in caught if "DecompressionBomb" in w.category.__name__]


def test_a_truly_decodable_bomb_is_refused_before_decoding(tmp_path):
    path = zero_png(tmp_path / "zeros.png", SIDE["237"], SIDE["237"])  # ~230 KB, 237 MP
    assert path.stat().st_size < 1_000_000
    with pytest.raises(ImageError) as info:
        images.load_rgb(path)
    assert str(info.value) == f"{path}: {EXPECTED['237']}"


def test_the_environment_variable_moves_the_limit_both_ways(tmp_path, monkeypatch):
    path = zero_png(tmp_path / "zeros.png", 2000, 1000)  # 2 MP, decodable
    monkeypatch.setenv("FACEKIT_MAX_PIXELS", "1_000_000")
    with pytest.raises(ImageError) as info:
        images.load_rgb(path)
    assert info.value.reason == f"image 2000x1000 larger than 1000000 pixels, {HINT}"
    big = header_bomb(tmp_path / "big.png", SIDE["237"], SIDE["237"])
    monkeypatch.setenv("FACEKIT_MAX_PIXELS", "300000000")  # raised above 237 MP: the header passes,
    with pytest.raises(ImageError, match="corrupt or truncated image"):  # and its one row of pixels does not
        images.probe(big)
    monkeypatch.setenv("FACEKIT_MAX_PIXELS", "3000000")
    assert images.load_rgb(path).shape == (1000, 2000, 3)


@pytest.mark.parametrize("value", ["lots", "0", "-5", "1" * 5000])
def test_a_bad_limit_in_the_environment_is_a_clear_error(tmp_path, monkeypatch, value):
    monkeypatch.setenv("FACEKIT_MAX_PIXELS", value)
    with pytest.raises(DatatoolError) as info:
        images.max_pixels()
    assert str(info.value) == (f"FACEKIT_MAX_PIXELS={value[:40]!r}: expected a positive whole number of pixels, "
                               "e.g. FACEKIT_MAX_PIXELS=250000000")
    ds = _bomb_dataset(tmp_path / "ds", "237")
    out = _run("augment", ds, "--out", tmp_path / "aug", "--factor", "1", exit_code=1)
    assert "Error: FACEKIT_MAX_PIXELS=" in out


def test_the_help_states_the_limit_and_how_to_raise_it():
    from trainer.cli import cli as trainer_cli

    for group in (cli, trainer_cli):
        text = CliRunner().invoke(group, ["--help"]).output
        assert f"{images.MAX_PIXELS:,}" in text and "FACEKIT_MAX_PIXELS" in text


# --- every command on a bomb -----------------------------------------------------------------

@pytest.mark.parametrize("which", ["237", "900"])
def test_every_reader_names_the_bomb_and_decodes_none(tmp_path, which):
    ds = _bomb_dataset(tmp_path / "ds", which)
    big = ds / "images" / "big.png"
    message = EXPECTED[which]

    out = _run("validate", ds, exit_code=1)
    assert f"images/big.png  -  {message}" in out
    out = _run("augment", ds, "--out", tmp_path / "aug", "--factor", "1", exit_code=1)
    assert f"Error: {big}: {message}\n" in out
    out = _run("crop", ds, "--out", tmp_path / "crops", "--person", "me", exit_code=0)
    assert f"images/big.png  -  {message} (skipped)" in out
    for extra in ([], ["--recipe", "default"]):
        out = _run("preview", ds, "--grid", tmp_path / f"p{len(extra)}.png", *extra, exit_code=0)
        assert f"1 unreadable:\n  {big}: {message}\n" in out
    out = _run("split", ds, "--out", tmp_path / "tf", exit_code=0)
    assert f"{big}  -  {message} (excluded)" in out
    rows = (tmp_path / "tf" / "split.csv").read_text()
    assert "big.png,excluded,,,,bad-image" in rows


def test_a_json_stating_a_bomb_size_is_refused_from_the_json(tmp_path):
    ds = _bomb_dataset(tmp_path / "ds", "237", honest=True)
    side = SIDE["237"]
    message = (f"{ds / 'images' / 'big.json'}: imageWidth/imageHeight: {side}x{side} is more than 120000000 pixels "
               "(set FACEKIT_MAX_PIXELS to raise the limit); the annotated image cannot be used")
    for args in (["augment", ds, "--out", tmp_path / "aug"], ["split", ds, "--out", tmp_path / "tf"]):
        out = _run(*args, exit_code=1)
        assert out.startswith(f"Error: {message}")
    assert not (tmp_path / "aug").exists() and not (tmp_path / "tf").exists()


def test_trainer_predict_refuses_a_bomb_and_predicts_the_rest(trained_run, tmp_path):
    from trainer.predict import UnreadableImages, predict_paths

    bomb = header_bomb(tmp_path / "in" / "big.png", SIDE["900"], SIDE["900"])
    write_image(tmp_path / "in" / "ok.jpg")
    with pytest.raises(UnreadableImages) as info:
        predict_paths(trained_run, [tmp_path / "in"], out=tmp_path / "pred", progress=False)
    assert str(info.value).startswith(f"{bomb}: {EXPECTED['900']}; 1 of 2 images could not be read")
    assert [Path(r["source"]).name for r in info.value.rows] == ["ok.jpg"]
    assert (tmp_path / "pred" / "problems.txt").read_text() == f"{bomb}: {EXPECTED['900']}\n"


# --- recipes: YAML alias bombs ---------------------------------------------------------------

LAUGHS = "".join(f"l{k}: &l{k} [{', '.join([f'*l{k - 1}'] * 9) if k else ', '.join(['lol'] * 9)}]\n"
                 for k in range(9))


@pytest.mark.parametrize("text,message", [
    # nine levels of nine aliases: 387,420,489 strings from 1 KB ("billion laughs")
    (LAUGHS + "transform: {__class_fullname__: Compose, transforms: [], extra: *l8}\n",
     "YAML aliases expand it to more than 100000 nodes (line 6): refusing a 'billion laughs' file"),
    # an alias inside the node it names: a structure that contains itself
    ("a: &a [1, *a]\ntransform: {}\n",
     "YAML alias refers to a node that contains it (line 1): recursive structures are refused"),
    # nested 100,000 deep
    ("transform: " + "[" * 100_000 + "]" * 100_000 + "\n", "not valid YAML: nested too deeply"),
])
def test_recipe_bombs_are_refused_naming_the_file(tmp_path, text, message):
    from datatool.augment.recipes import load_recipe
    from datatool.core.errors import RecipeError

    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(info.value) == f"{path}: {message}"
    ds = _bomb_dataset(tmp_path / "ds", "237")
    out = _run("augment", ds, "--out", tmp_path / "aug", "--recipe", path, exit_code=1)
    assert out == f"Error: {path}: {message}\n"
    out = _run("preview", ds, "--grid", tmp_path / "p.png", "--recipe", path, exit_code=1)
    assert out == f"Error: {path}: {message}\n"


def test_yolo_data_yaml_alias_bomb_is_refused_naming_the_file(tmp_path):
    root = tmp_path / "yolo"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    data = root / "data.yaml"
    data.write_text(LAUGHS + "names: *l8\n")
    out = _run("convert", root, "--from", "yolo", "--to", "labelme", "--out", tmp_path / "out", exit_code=1)
    assert out == (f"Error: {data}: YAML aliases expand it to more than 100000 nodes (line 6): "
                   "refusing a 'billion laughs' file\n")
    assert not (tmp_path / "out").exists()


def test_shipped_recipes_load_through_the_bounded_loader():
    from datatool.augment.recipes import list_recipes, load_recipe

    assert all(load_recipe(name).pipeline["transform"] for name in list_recipes())


# --- nothing written over without --overwrite ------------------------------------------------

def _exists_message(path: Path) -> str:
    return f"Error: {path}: already exists (use --overwrite to replace it)\n"


def test_stats_json_and_plots_refuse_existing_files(tiny_dataset, tmp_path):
    from datatool.stats import PLOT_NAMES

    report, plots = tmp_path / "stats.json", tmp_path / "plots"
    _run("stats", tiny_dataset, "--json", report, "--plots", plots, exit_code=0)
    assert {p.name for p in plots.iterdir()} <= set(PLOT_NAMES)
    report.write_text("mine")
    out = _run("stats", tiny_dataset, "--json", report, exit_code=1)
    assert out == _exists_message(report) and report.read_text() == "mine"
    plot = plots / PLOT_NAMES[0]  # the first one found is named
    plot.write_bytes(b"mine")
    out = _run("stats", tiny_dataset, "--plots", plots, exit_code=1)
    assert out == _exists_message(plot) and plot.read_bytes() == b"mine"
    _run("stats", tiny_dataset, "--json", report, "--plots", plots, "--overwrite", exit_code=0)
    assert json.loads(report.read_text())["images"] and plot.read_bytes()[:4] == b"\x89PNG"


def test_inspect_json_and_grid_refuse_existing_files(detection_tfrecords, tmp_path):
    for option, name in (("--json", "inspect.json"), ("--grid", "grid.png")):
        target = tmp_path / name
        target.write_text("mine")
        out = _run("inspect", detection_tfrecords, option, target, exit_code=1)
        assert out == _exists_message(target) and target.read_text() == "mine"
        _run("inspect", detection_tfrecords, option, target, "--overwrite", exit_code=0)
        assert target.read_bytes() != b"mine"


def test_crop_grid_refuses_an_existing_file_before_cropping(tiny_dataset, tmp_path):
    grid = tmp_path / "crops.png"
    grid.write_text("mine")
    out = _run("crop", tiny_dataset, "--out", tmp_path / "faces", "--person", "me", "--grid", grid, exit_code=1)
    assert out == _exists_message(grid) and grid.read_text() == "mine"
    assert not (tmp_path / "faces").exists()


def test_trainer_evaluate_refuses_to_replace_its_reports(trained_run, detection_tfrecords, tmp_path):
    from trainer.cli import cli as trainer_cli

    run = tmp_path / "run"  # a copy: evaluating into RUN itself must not touch the shared run
    shutil.copytree(trained_run, run)
    for out_args, folder in (([], run), (["--out", tmp_path / "ev"], tmp_path / "ev")):
        folder.mkdir(exist_ok=True)
        (folder / "metrics.json").write_text("mine")
        result = CliRunner().invoke(trainer_cli, [str(a) for a in ["evaluate", run, detection_tfrecords, *out_args]])
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert result.output == _exists_message(folder / "metrics.json")
        assert (folder / "metrics.json").read_text() == "mine" and not (folder / "pr_curve.png").exists()
    (run / "metrics.json").unlink()
    (run / "worst.png").write_text("mine")
    result = CliRunner().invoke(trainer_cli, ["evaluate", str(run), str(detection_tfrecords)])
    assert result.exit_code == 1 and result.output == _exists_message(run / "worst.png")
    result = CliRunner().invoke(trainer_cli, ["evaluate", str(run), str(detection_tfrecords), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "metrics.json").read_text())["images"] > 0


# --- convert: never into its source, all or nothing ------------------------------------------

def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


INSIDE = "must not be inside the source {src} or be the source itself, even with --overwrite"


@pytest.mark.parametrize("out_rel,words", [
    ("ds", INSIDE),  # the source itself
    ("ds/images/out", INSIDE),  # inside it
    (".", "must not contain the source {src}"),  # around it
])
def test_convert_never_writes_into_its_source(tiny_dataset, out_rel, words):
    before = _snapshot(tiny_dataset)
    out = tiny_dataset.parent / out_rel
    result = _run("convert", tiny_dataset, "--from", "labelme", "--to", "labelme", "--out", out, "--overwrite",
                  exit_code=1)
    assert result == f"Error: {out}: the output folder {words.format(src=tiny_dataset)}; choose another --out\n"
    assert _snapshot(tiny_dataset) == before


def test_convert_refuses_an_output_around_a_coco_file_it_reads(tmp_path, tiny_dataset):
    _run("convert", tiny_dataset, "--from", "labelme", "--to", "coco", "--out", tmp_path / "coco", exit_code=0)
    src = tmp_path / "coco" / "annotations.json"
    before = src.read_bytes()
    out = _run("convert", src, "--from", "coco", "--to", "coco", "--out", tmp_path / "coco", "--overwrite",
               exit_code=1)
    assert out.startswith(f"Error: {tmp_path / 'coco'}: the output folder must not contain the source {src}")
    assert src.read_bytes() == before


def _two_stems(root: Path) -> Path:
    for name in ("a.jpg", "b.jpg", "sub/c.jpg", "sub/c.png"):
        img = write_image(root / "images" / name, fmt="PNG" if name.endswith(".png") else None)
        if name != "sub/c.png":
            write_labelme_json(img, [(8, 6, 30, 30)], width=64, height=48)
    return root


def _coco_listing_twice(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    for name in ("p0.jpg", "p1.jpg"):
        write_image(root / "images" / name)
    entry = lambda i, name: {"id": i, "file_name": name, "width": 64, "height": 48}  # noqa: E731
    data = {"images": [entry(1, "p0.jpg"), entry(2, "p1.jpg"), entry(3, "p0.jpg")],
            "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [8, 6, 22, 24]} for i in (1, 2, 3)],
            "categories": [{"id": 1, "name": "face"}]}
    (root / "annotations.json").write_text(json.dumps(data))
    return root / "annotations.json"


@pytest.mark.parametrize("to", ["labelme", "coco", "voc", "yolo", "csv", "wider"])
@pytest.mark.parametrize("case", ["two-stems", "coco-twice"])
def test_convert_that_fails_leaves_no_partial_output(tmp_path, to, case):
    if case == "two-stems":
        src, fmt = _two_stems(tmp_path / "src"), "labelme"
        message = (f"Error: {src}: images 'sub/c.jpg' and 'sub/c.png' share one name without extension, so their "
                   f"{to} annotation files would be one file; nothing written (rename one of them)\n")
        if to not in ("labelme", "voc", "yolo"):  # one annotation file for all: the names do not collide
            out = _run("convert", src, "--from", fmt, "--to", to, "--out", tmp_path / "out", exit_code=0)
            return
    else:
        src, fmt = _coco_listing_twice(tmp_path / "src"), "coco"
        message = f"Error: {src}: image 'p0.jpg' is listed twice; nothing written (each image may appear once)\n"
    out_dir = tmp_path / "out"
    out = _run("convert", src, "--from", fmt, "--to", to, "--out", out_dir, exit_code=1)
    assert out.endswith(message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no output, no staging folder
    out_dir.mkdir()
    (out_dir / "mine.txt").write_text("keep")
    _run("convert", src, "--from", fmt, "--to", to, "--out", out_dir, "--overwrite", exit_code=1)
    assert _snapshot(out_dir) == {"mine.txt": b"keep"}


def test_a_staged_output_is_all_or_nothing(tmp_path):
    """Whatever fails while a derived folder is written (here after two files), the folder stays
    as it was: absent, or with its old files; on success it holds exactly what was written."""
    from datatool.core.fsutil import staged_output_dir

    out = tmp_path / "out"
    for existing in (None, {"old.txt": b"old"}):
        if existing:
            out.mkdir()
            (out / "old.txt").write_bytes(b"old")
        with pytest.raises(OSError, match="No space left"):
            with staged_output_dir(out, overwrite=True) as stage:
                (stage / "images").mkdir()
                (stage / "images" / "a.json").write_text("{}")
                (stage / "old.txt").write_text("new")
                raise OSError(28, "No space left on device")
        assert (_snapshot(out) if out.exists() else None) == existing
        assert sorted(p.name for p in tmp_path.iterdir()) == (["out"] if existing else [])
    with staged_output_dir(out, overwrite=True) as stage:
        (stage / "old.txt").write_text("new")
        (stage / "sub").mkdir()
        (stage / "sub" / "b.txt").write_text("b")
    assert _snapshot(out) == {"old.txt": b"new", "sub/b.txt": b"b"}
    with pytest.raises(DatatoolError, match="folder is not empty"):
        with staged_output_dir(out) as stage:
            pass
    shutil.rmtree(out)
    out.mkdir()  # an empty folder is replaced by the staged one in one rename
    with staged_output_dir(out) as stage:
        (stage / "c.txt").write_text("c")
    assert _snapshot(out) == {"c.txt": b"c"} and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
