"""Hostile inputs: one generated corpus of broken files, every reader and writer run over each.

Each `Case` is one class of bad input (issue 14): a labelme dataset (or a COCO / CSV export)
holding one good image and one hostile entry. Every command that reads such a source must
exit 1 with the exact error naming the file and the field, print no traceback, and leave no
output under its final name. To cover a new class, add a `Case` to `CASES`: a builder for the
hostile files, the error expected, and the commands it applies to.

How a command words the error depends on where the problem is found:
- `REJECTED`: one annotated image is broken. Stages that load the dataset (`LOADERS`) refuse
  it (`dataset.refuse_rejected`: "<file>: <field>: <reason>; the annotated image cannot be
  used ..."); `convert` lists it in its table and stops before writing; `validate` reports it
  (checked here in its --json report).
- `FATAL`: the whole source cannot be read; every command says "Error: <file>: <field>: <reason>".
A class worded otherwise (an image refused by each stage in its own words, say) gives its
`Case` a `check(command, output, src, bad)` that asserts the text instead; the exit code, the
absence of a traceback and of output are asserted for every case alike.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner

from conftest import write_image, write_labelme_json
from datatool.cli import cli
from datatool.core.images import MAX_PIXELS, MAX_PIXELS_ENV

FACE = (8, 6, 30, 30)
W, H = 64, 48
FORMATS = ("labelme", "wider", "coco", "voc", "yolo", "csv")
REJECTED, FATAL = "rejected", "fatal"
INT_LIMIT = sys.get_int_max_str_digits()

RAISE = f" (set {MAX_PIXELS_ENV} to raise the limit)"  # how every pixel-limit error ends


# ----------------------------------------------------------------------------- the commands

def _args(command: str, src: Path, out: Path, report: Path) -> list[str]:
    """CLI arguments of `command` over `src`; everything it would write goes under `out`
    (validate's --json report, kept apart, is how its issues are checked exactly)."""
    if command.startswith("validate"):
        fmt = command.partition("-")[2] or "labelme"
        return ["validate", str(src), "--format", fmt, "--no-health", "--json", str(report)]
    if command.startswith("convert"):
        _, src_format, dst_format = command.split("-")
        return ["convert", str(src), "--from", src_format, "--to", dst_format, "--out", str(out)]
    return {
        "crop": ["crop", str(src), "--person", "alice", "--out", str(out)],
        "augment": ["augment", str(src), "--out", str(out), "--factor", "1", "--workers", "1"],
        "preview": ["preview", str(src), "--grid", str(out / "grid.png")],
        "preview-recipe": ["preview", str(src), "--grid", str(out / "grid.png"), "--recipe", "light"],
        "split": ["split", str(src), "--out", str(out), "--workers", "1"],
        "stats": ["stats", str(src), "--json", str(out / "stats.json"), "--plots", str(out / "plots")],
    }[command]


LOADERS = ("crop", "augment", "preview", "preview-recipe", "split", "stats")
LABELME_READERS = ("validate", *(f"convert-labelme-{f}" for f in FORMATS), *LOADERS)  # the 13 readers


# ----------------------------------------------------------------------------- the corpus

def _shape(points, *, label="face", shape_type="rectangle") -> dict:
    return {"label": label, "points": points, "group_id": None, "description": "", "shape_type": shape_type,
            "flags": {}, "mask": None}


def _labelme(**changes) -> dict:
    """The labelme dict of images/bad.jpg with one good face, then `changes` applied."""
    data = {"version": "6.3.1", "flags": {}, "shapes": [_shape([[8, 6], [30, 30]])], "imagePath": "bad.jpg",
            "imageData": None, "imageHeight": H, "imageWidth": W}
    data.update(changes)
    return data


def _with_width(literal: str) -> str:
    """The bad JSON with `imageWidth` written as this literal text (one line)."""
    return json.dumps(_labelme()).replace(f'"imageWidth": {W}', f'"imageWidth": {literal}')


def _column(text: str, literal: str) -> int:
    return text.index(literal) + 1


DEEP = 100_000


def _deep(text: str) -> str:
    """`text` (a JSON object) with a list nested DEEP levels added as its last key."""
    return text[:-1] + ', "x": ' + "[" * DEEP + "]" * DEEP + "}"


def _truncated_png(path: Path) -> None:
    full = write_image(path.with_suffix(".full.png"), W, H, seed=2, box=FACE).read_bytes()
    path.with_suffix(".full.png").unlink()
    path.write_bytes(full[:len(full) // 2])  # cut inside the pixel data


@dataclass(frozen=True)
class Case:
    """One class of hostile input.

    `json_text` writes images/bad.json (labelme) as text; `image` writes the bad image (default:
    a readable JPEG images/bad.jpg). For COCO/CSV cases `source` builds the whole source instead
    and returns the path the commands get. `file` is the file the error names, relative to the
    source folder; `validate` is the (field, reason) validate reports instead, when it sees more
    (it compares sizes with the real image). `errors`: how many errors convert counts.
    """

    id: str
    field: str
    reason: str
    style: str = REJECTED
    json_text: Callable[[], str] | None = None
    image: Callable[[Path], None] | None = None
    source: Callable[[Path], Path] | None = None
    file: str = "images/bad.json"
    validate: tuple[str, str] | None = None
    commands: tuple[str, ...] = LABELME_READERS
    errors: int = 1  # errors convert counts in the source
    check: Callable[[str, str, Path, str], None] | None = None  # replaces the style's text check


def _labelme_source(case: Case, root: Path) -> Path:
    images = root / "images"
    good = write_image(images / "good.jpg", W, H, seed=1, box=FACE)
    write_labelme_json(good, [FACE], width=W, height=H)
    if case.image is not None:
        case.image(images)
    else:
        write_image(images / "bad.jpg", W, H, seed=2, box=FACE)
    if case.json_text is not None:
        (images / "bad.json").write_text(case.json_text())
    return root


def _coco() -> dict:
    """A COCO export of images/good.jpg with one face."""
    return {"images": [{"id": 1, "file_name": "good.jpg", "width": W, "height": H}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [8, 6, 22, 24], "area": 528,
                             "iscrowd": 0}],
            "categories": [{"id": 1, "name": "face"}]}


def _coco_source(annotations: Callable[[dict], str]) -> Callable[[Path], Path]:
    """A COCO source (annotations.json + images/good.jpg), its JSON text `annotations(_coco())`."""
    def build(root: Path) -> Path:
        write_image(root / "images" / "good.jpg", W, H, seed=1, box=FACE)
        (root / "annotations.json").write_text(annotations(_coco()))
        return root / "annotations.json"
    return build


def _csv_source(row: str) -> Callable[[Path], Path]:
    def build(root: Path) -> Path:
        write_image(root / "images" / "good.jpg", W, H, seed=1, box=FACE)
        (root / "annotations.csv").write_text("image,width,height,label,x_min,y_min,x_max,y_max,group,attributes\n"
                                              + row + "\n")
        return root / "annotations.csv"
    return build


def _coco_with_long_id(coco: dict) -> str:
    return json.dumps(coco).replace('"id": 1, "file_name"', '"id": ' + "7" * 5000 + ', "file_name"')


def _coco_huge_width(coco: dict) -> str:
    coco["images"][0]["width"] = 1e308
    return json.dumps(coco)


LONG = "9" * 5000
COCO = ("validate-coco", "convert-coco-labelme", "convert-coco-yolo")
CSV = ("validate-csv", "convert-csv-labelme", "convert-csv-coco")
LABELME_CONVERT = tuple(f"convert-labelme-{f}" for f in FORMATS)

CASES = [
    # 1. a broken shape is an error, never a negative
    Case("points-as-strings", "shapes[0].points", "expected a list of [x, y] number pairs",
         json_text=lambda: json.dumps(_labelme(shapes=[_shape([["8", "6"], ["30", "30"]])]))),
    Case("points-nan", "shapes[0].points", "expected a list of [x, y] number pairs",
         json_text=lambda: json.dumps(_labelme(shapes=[_shape([[float("nan"), 6], [30, 30]])]))),
    Case("rectangle-1-point", "shapes[0].points", "rectangle needs 2 points, got 1",
         json_text=lambda: json.dumps(_labelme(shapes=[_shape([[8, 6]])]))),
    Case("rectangle-3-points", "shapes[0].points", "rectangle needs 2 points, got 3",
         json_text=lambda: json.dumps(_labelme(shapes=[_shape([[8, 6], [30, 30], [9, 9]])]))),
    Case("zero-area-box", "shapes[0].points", "zero-area box [8, 6, 8, 30]",
         json_text=lambda: json.dumps(_labelme(shapes=[_shape([[8, 6], [8, 30]])]))),
    Case("circle-only-shape", "shapes[0].shape_type", "'circle' shapes are not supported (draw faces as rectangles)",
         json_text=lambda: json.dumps(_labelme(shapes=[_shape([[20, 20], [30, 20]], shape_type="circle")]))),
    Case("label-a-number", "shapes[0].label", "expected a string, got 5",
         json_text=lambda: json.dumps(_labelme(shapes=[_shape([[8, 6], [30, 30]], label=5)]))),
    Case("shape-not-an-object", "shapes[0]", "expected an object",
         json_text=lambda: json.dumps(_labelme(shapes=[[8, 6, 30, 30]]))),
    # 2. hostile numbers and JSON
    Case("width-400-digits", "imageWidth/imageHeight",
         f"a 400-digit integer x {H} is more than {MAX_PIXELS} pixels{RAISE}",
         json_text=lambda: _with_width("9" * 400),
         validate=("imageWidth/imageHeight", f"JSON says a 400-digit integer x {H} but bad.jpg is {W}x{H} "
                   "(labelme refuses to open a file whose sizes disagree)")),
    Case("width-5000-digits", "imageWidth",
         f"a 5000-digit integer (line 1, column {_column(_with_width(LONG), LONG)}) is too long to read "
         f"(the limit is {INT_LIMIT} digits)",
         json_text=lambda: _with_width(LONG)),
    Case("json-nested-100000-deep", "", "JSON nested too deeply (more than 100 levels)",
         json_text=lambda: _deep(json.dumps(_labelme()))),
    Case("width-1e308", "imageWidth/imageHeight", f"1e+308x{H} is more than {MAX_PIXELS} pixels{RAISE}",
         json_text=lambda: _with_width("1e308"),
         validate=("imageWidth/imageHeight", f"JSON says 1e+308x{H} but bad.jpg is {W}x{H} "
                   "(labelme refuses to open a file whose sizes disagree)")),
    Case("width-fractional", "imageWidth/imageHeight", f"expected positive integers, got 64.5/{H}",
         json_text=lambda: _with_width("64.5"),
         validate=("imageWidth/imageHeight", f"JSON says 64.5x{H} but bad.jpg is {W}x{H} "
                   "(labelme refuses to open a file whose sizes disagree)")),
    Case("coco-id-5000-digits", "id",
         f"a 5000-digit integer (line 1, column {_column(_coco_with_long_id(_coco()), '7' * 5000)}) "
         f"is too long to read (the limit is {INT_LIMIT} digits)",
         style=FATAL, source=_coco_source(_coco_with_long_id), file="annotations.json", commands=COCO),
    Case("coco-nested-100000-deep", "", "JSON nested too deeply (more than 100 levels)",
         style=FATAL, source=_coco_source(lambda coco: _deep(json.dumps(coco))), file="annotations.json",
         commands=COCO),
    Case("coco-width-1e308", "images[0].width/height", f"1e+308x{H} is more than {MAX_PIXELS} pixels{RAISE}",
         source=_coco_source(_coco_huge_width), file="annotations.json", commands=COCO,
         errors=2),  # and its annotation's image_id now names no image
    Case("csv-width-400-digits", "line 2: width", f"a 400-digit integer x {H} is more than {MAX_PIXELS} pixels{RAISE}",
         source=_csv_source(f"good.jpg,{'9' * 400},{H},face,8,6,30,30,,"), file="annotations.csv", commands=CSV),
    Case("csv-attributes-nested-100000-deep", "line 2: attributes",
         "expected a JSON object: JSON nested too deeply (more than 100 levels)",
         # 5,000 levels: past the parser's recursion, within the csv module's 128 KiB cell limit
         source=_csv_source(f'good.jpg,{W},{H},face,8,6,30,30,,"{{""x"": {"[" * 5000}{"]" * 5000}}}"'),
         file="annotations.csv", commands=CSV),
    # 4. truncated images: decode-checked as validate does
    Case("truncated-png", "", "corrupt or truncated image (image file is truncated)",
         image=lambda images: (_truncated_png(images / "bad.png"),
                               write_labelme_json(images / "bad.png", [FACE], width=W, height=H)),
         file="images/bad.png", commands=("validate", *LABELME_CONVERT)),
]


# ----------------------------------------------------------------------------- the run

def _row(file: str, field_: str, reason: str) -> re.Pattern:
    """An issue-table row (`print_issue_table`) of an error, whatever the column widths (and
    whatever a progress bar on stderr left before it)."""
    return re.compile(rf"(?:^|\s)ERROR\s+{re.escape(file)}\s+{re.escape(field_ or '-')}\s+{re.escape(reason)}$", re.M)


def _joined(*parts: str) -> str:
    return ": ".join(p for p in parts if p)


@pytest.mark.parametrize("case,command", [pytest.param(c, cmd, id=f"{c.id}-{cmd}") for c in CASES
                                          for cmd in c.commands])
def test_hostile_input_fails_cleanly_naming_file_and_field(case, command, tmp_path):
    root = tmp_path / "src"
    src = case.source(root) if case.source else _labelme_source(case, root)
    bad = str(root / case.file)
    out, report = tmp_path / "out", tmp_path / "report.json"

    result = CliRunner().invoke(cli, _args(command, src, out, report))

    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # a clean exit, no crash
    assert "Traceback" not in result.output
    assert not out.exists(), sorted(out.rglob("*"))  # nothing written under a final name
    if case.check is not None:
        case.check(command, result.output, src, bad)
    elif case.style == FATAL:
        assert f"Error: {_joined(bad, case.field, case.reason)}\n" in result.output
    elif command.startswith("validate"):
        field_, reason = case.validate or (case.field, case.reason)
        issues = json.loads(report.read_text())["issues"]
        assert {"severity": "error", "file": bad, "field": field_, "message": reason} in \
            [{k: i[k] for k in ("severity", "file", "field", "message")} for i in issues], issues
    elif command.startswith("convert"):
        assert _row(bad, case.field, case.reason).search(result.output), result.output
        assert result.output.endswith(f"Error: {src}: {case.errors} error(s) in the source; nothing written (fix them, or "
                                      "pass --skip-errors to leave those samples out)\n")
    else:
        assert f"Error: {_joined(bad, case.field, case.reason)}; the annotated image cannot be used: fix it " \
               "(`datatool validate` lists every problem) or pass --skip-errors to leave it out\n" in result.output


def test_every_reader_is_in_the_corpus_run():
    """The 13 readers issue 14 names are all run over the labelme corpus."""
    assert len(LABELME_READERS) == 13
    assert {c for case in CASES for c in case.commands} >= set(LABELME_READERS)


def test_trainer_predict_names_a_truncated_image_and_exits_1(single_run, tmp_path):
    from trainer.cli import cli as trainer_cli

    inputs = tmp_path / "in"
    write_image(inputs / "good.png", W, H, seed=1, box=FACE)
    _truncated_png(inputs / "bad.png")
    out = tmp_path / "pred"
    result = CliRunner().invoke(trainer_cli, ["predict", str(single_run), str(inputs), "--out", str(out)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    assert result.output.endswith(
        f"Error: {inputs / 'bad.png'}: corrupt or truncated image (image file is truncated); 1 of 2 images could "
        f"not be read and were skipped (listed in {out / 'problems.txt'})\n")
    assert "1 images/frames" in result.output  # the summary of what was done comes first
    rows = json.loads((out / "predictions.json").read_text())
    assert [r["source"] for r in rows] == [str(inputs / "good.png")]


def test_a_hostile_provenance_record_is_ignored_not_a_crash(tmp_path):
    """dataset.json is optional information: nested 100,000 deep or with a 5,000-digit number,
    it reads as absent."""
    from datatool.core.fsutil import read_record

    (tmp_path / "dataset.json").write_text(_deep('{"command": "x"}'))
    assert read_record(tmp_path) is None
    (tmp_path / "dataset.json").write_text('{"seed": ' + LONG + "}")
    assert read_record(tmp_path) is None
