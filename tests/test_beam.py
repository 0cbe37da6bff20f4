"""`augment` and `split` with `--runner beam` (Apache Beam's DirectRunner): the same files as the
local runner, the same refusals of bad input, and nothing final-named after a failed pipeline."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import make_face_dataset, write_image, write_labelme_json
from datatool.augment import augment_dataset
from datatool.cli import cli
from datatool.core.errors import DatatoolError, ImageError, OutputExistsError
from datatool.core.tfrecord import SPLITS, list_shards, shard_records
from datatool.split import split

pytest.importorskip("apache_beam", reason="the beam extra: pip install -e '.[beam]' (make test installs it)")

from datatool.beam.augment import augment_on_beam  # noqa: E402
from datatool.beam.split import split_on_beam  # noqa: E402

TWO_PROCESSES = "--direct_num_workers=2 --direct_running_mode=multi_processing"


def digests(root: Path) -> dict[str, str]:
    """sha256 of every file under root but dataset.json (it names the runner and the time)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "dataset.json"}


def records(tfdir: Path) -> dict[str, list[bytes]]:
    """Each split's serialized records, sorted (read back through the shard reader)."""
    return {name: sorted(bytes(r.numpy()) for shard in list_shards(tfdir, name) for _, r in shard_records(shard))
            for name in SPLITS}


def final_files(out: Path) -> list[str]:
    """Every file or folder under out, hidden run folders included (none should be left)."""
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) if out.exists() else []


@pytest.fixture
def faces(tmp_path) -> Path:
    """20 small labelled images (some negatives, one PNG), and a person crop."""
    src = make_face_dataset(tmp_path / "ds", n=19, size=48)
    png = write_image(src / "images" / "shot.png", 48, 40, seed=5, box=(4, 4, 20, 20))
    write_labelme_json(png, [(4, 4, 20, 20)], width=48, height=40)
    write_image(src / "people" / "alice" / "a1.jpg", 40, 40, seed=20)
    return src


# ------------------------------------------------------------------------------ same outputs

def test_augment_on_beam_writes_the_local_runners_bytes(faces, tmp_path):
    local = augment_dataset(faces, out=tmp_path / "local", recipe="heavy", factor=2, seed=7, workers=1)
    beam = augment_on_beam(faces, out=tmp_path / "beam", recipe="heavy", factor=2, seed=7)
    want = digests(tmp_path / "local")
    assert len(want) == 20 * 3 * 2 + 3 + 1  # 20 images x (original + 2 variants) x (image + JSON), crop x3, manifest
    assert digests(tmp_path / "beam") == want
    assert dict(beam.counts) == dict(local.counts) and not beam.errors
    assert not list((tmp_path / "beam").glob(".facekit-beam-*"))


def test_split_on_beam_gives_the_same_csv_and_shards(faces, tmp_path, monkeypatch):
    import datatool.beam.split as mod

    monkeypatch.setattr(mod, "CHUNK", 3)  # shards of 7 records made from parts of 3, 3 and 1
    # the JPEGs pass through, the PNG is re-encoded: both kinds of record
    local = split(faces, out=tmp_path / "local", shards=2, max_side=48, progress=False)
    beam = split_on_beam(faces, out=tmp_path / "beam", shards=2, max_side=48, beam_options=TWO_PROCESSES)
    assert (tmp_path / "beam" / "split.csv").read_bytes() == (tmp_path / "local" / "split.csv").read_bytes()
    got, want = records(tmp_path / "beam"), records(tmp_path / "local")
    assert sum(map(len, want.values())) == 20 and got == want
    # every shard holds the same records in the same order: the same file
    shards = {tag: {p.name: p.read_bytes() for p in (tmp_path / tag).glob("*.tfrecord")} for tag in ("beam", "local")}
    assert len(shards["local"]) >= 4 and shards["beam"] == shards["local"]
    assert (beam.passthrough, beam.reencoded) == (local.passthrough, local.reencoded)
    assert beam.passthrough and beam.reencoded


# ------------------------------------------------------------------------------ failures and bad input

def test_an_element_that_fails_the_augment_pipeline_leaves_no_final_file(faces, tmp_path, monkeypatch):
    import datatool.beam.augment as mod

    real, calls = mod.write_bytes, []

    def full_disk(path, data):
        calls.append(path)
        if len(calls) == 7:
            raise OSError(28, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(mod, "write_bytes", full_disk)
    out = tmp_path / "out"
    with pytest.raises(DatatoolError, match="Beam pipeline failed.*No space left on device"):
        augment_on_beam(faces, out=out, factor=2)
    assert len(calls) >= 7 and final_files(out) == []


def test_an_element_that_fails_the_split_pipeline_leaves_no_final_file(faces, tmp_path, monkeypatch):
    import datatool.beam.split as mod

    real, calls = mod.record_bytes, []

    def broken(item, **kw):
        calls.append(item)
        if len(calls) == 9:
            raise RuntimeError("worker lost")
        return real(item, **kw)

    monkeypatch.setattr(mod, "record_bytes", broken)
    out = tmp_path / "tf"
    with pytest.raises(DatatoolError, match="Beam pipeline failed.*worker lost"):
        split_on_beam(faces, out=out, shards=2)
    assert final_files(out) == []


def test_a_corrupt_image_is_reported_as_on_the_local_runner(faces, tmp_path):
    victim = faces / "images" / "img_0004.jpg"
    data = victim.read_bytes()
    victim.write_bytes(data[:len(data) * 3 // 4])  # truncated: the header still reads, the pixels do not
    local = augment_dataset(faces, out=tmp_path / "local", factor=1, workers=1)
    beam = augment_on_beam(faces, out=tmp_path / "beam", factor=1)
    assert beam.errors == local.errors and len(beam.errors) == 1 and "img_0004.jpg" in beam.errors[0]
    assert digests(tmp_path / "beam") == digests(tmp_path / "local")
    # split stops at it, naming it, and writes nothing
    with pytest.raises(ImageError, match="img_0004.jpg") as on_beam:
        split_on_beam(faces, out=tmp_path / "tf-beam", shards=2)
    with pytest.raises(ImageError) as on_local:
        split(faces, out=tmp_path / "tf-local", shards=2, progress=False)
    assert str(on_beam.value) == str(on_local.value)
    assert final_files(tmp_path / "tf-beam") == []


def test_a_json_without_its_size_is_reported_as_on_the_local_runner(faces, tmp_path):
    import json

    jp = faces / "images" / "img_0002.json"
    data = json.loads(jp.read_text())
    del data["imageWidth"]
    jp.write_text(json.dumps(data))
    from datatool.dataset import RejectedImages

    with pytest.raises(RejectedImages) as on_local:
        augment_dataset(faces, out=tmp_path / "local", factor=1, workers=1)
    with pytest.raises(RejectedImages) as on_beam:
        augment_on_beam(faces, out=tmp_path / "beam", factor=1)
    assert str(on_beam.value) == str(on_local.value)
    assert f"{jp}: imageWidth/imageHeight" in str(on_beam.value)
    assert not (tmp_path / "beam").exists() and not (tmp_path / "local").exists()
    # --skip-errors: left out, named, the rest made alike
    local = augment_dataset(faces, out=tmp_path / "local", factor=1, workers=1, skip_errors=True)
    beam = augment_on_beam(faces, out=tmp_path / "beam", factor=1, skip_errors=True)
    assert beam.rejected == local.rejected and [str(p) for p in beam.rejected] == [str(jp)]
    assert digests(tmp_path / "beam") == digests(tmp_path / "local")


def test_a_non_empty_output_needs_overwrite(faces, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match=f"{out}.*--overwrite"):
        augment_on_beam(faces, out=out, factor=1)
    with pytest.raises(OutputExistsError, match=f"{out}.*--overwrite"):
        split_on_beam(faces, out=out)
    assert final_files(out) == ["mine.txt"]
    split_on_beam(faces, out=out, overwrite=True, shards=1)
    assert (out / "mine.txt").read_text() == "keep me" and (out / "train-00000-of-00001.tfrecord").is_file()


# ------------------------------------------------------------------------------ the CLI

def _cli(args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


@pytest.mark.parametrize("options,message", [
    ("--direct_num_wokers=2", "Beam does not know --direct_num_wokers"),  # a typo Beam would drop silently
    ("--direct_running_mode=bogus", "invalid choice: 'bogus'"),  # a value Beam refuses
    ("--direct_num_workers='2", "No closing quotation"),  # not a shell line
])
def test_refused_beam_options_give_one_line(faces, tmp_path, options, message):
    for command in (["augment", str(faces), "--factor", "1"], ["split", str(faces)]):
        r = _cli(command + ["--out", str(tmp_path / "out"), "--runner", "beam", "--beam-options", options])
        assert r.exit_code != 0 and message in r.output and "Traceback" not in r.output
        assert len([ln for ln in r.output.splitlines() if ln.strip()]) == 1, r.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args,message", [
    (["--runner", "beam", "--workers", "2"], "--workers: only with --runner local"),
    (["--runner", "local", "--beam-options", "--direct_num_workers=2"], "--beam-options: only with --runner beam"),
])
def test_options_of_the_other_runner_are_refused(faces, tmp_path, args, message):
    r = _cli(["split", str(faces), "--out", str(tmp_path / "tf")] + args)
    assert r.exit_code == 2 and message in r.output


def test_a_url_needs_beam(faces):
    r = _cli(["augment", str(faces), "--out", "gs://bucket/faces-aug", "--factor", "1"])
    assert r.exit_code == 2 and "a URL needs --runner beam" in r.output


def test_cli_augment_and_split_on_beam(faces, tmp_path):
    r = _cli(["augment", str(faces), "--out", str(tmp_path / "aug"), "--factor", "1", "--runner", "beam"])
    assert r.exit_code == 0, r.output
    assert "21 variants of 21 images (1 people crops) + 21 originals" in r.output
    r = _cli(["split", str(tmp_path / "aug"), "--out", str(tmp_path / "tf"), "--runner", "beam"])
    assert r.exit_code == 0, r.output
    assert sum(len(v) for v in records(tmp_path / "tf").values()) == 40  # the crops are identity data


def test_without_the_extra_beam_runs_stop_with_a_message_naming_it(faces, tmp_path):
    # Python treats a None in sys.modules as "cannot be imported": Beam as if not installed
    code = ("import sys; sys.modules['apache_beam'] = None\n"
            "from datatool.cli import main\n"
            "sys.argv = ['datatool'] + sys.argv[1:]; main()")
    for command in (["augment", str(faces), "--factor", "1"], ["split", str(faces)]):
        p = subprocess.run([sys.executable, "-c", code, *command, "--out", str(tmp_path / "out"),
                            "--runner", "beam"], capture_output=True, text=True)
        assert p.returncode == 1, p.stderr
        assert 'pip install "facekit[beam]"' in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "out").exists()
