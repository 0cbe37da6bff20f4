"""The recognizer: `trainer fit / evaluate / predict / enroll` on identity TFRecords.

One short fit (`identity_run`, through the CLI) on the shared 3-person `identity_tfrecords` is
reused by every test that needs a trained recognizer; metric and decision code is tested on
hand-computed tables.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from trainer.cli import cli

PEOPLE = ["alice", "bob", "carol"]
# batch 6 divides the 42 training crops: no smaller last batch, so the train step is traced once
IDENTITY_RUN_ARGS = ["--weights", "none", "--image-size", "48", "--alpha", "0.35", "--epochs", "8",
                     "--batch-size", "6", "--lr", "3e-3", "--patience", "30", "--seed", "0"]


def _invoke(*args, ok: bool = True):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in result.output
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def _people_dir(tfdir: Path) -> Path:
    return tfdir.parent / "ds" / "people"  # where the identity_tfrecords fixture made its crops


def _split_of(tfdir: Path) -> dict[str, str]:
    with open(tfdir / "split.csv", newline="") as f:
        return {r["image_id"]: r["split"] for r in csv.DictReader(f)}


def _rows(out: Path) -> list[dict]:
    with open(out / "predictions.csv", newline="") as f:
        return list(csv.DictReader(f))


def write_person(folder: Path, n: int, *, seed: int, size: int = 48) -> list[Path]:
    """`n` crops of "dave", a fourth synthetic identity the run never trained on: yellowish with
    diagonal stripes (the fixture's people are red rows, green columns, blue checks)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    mask = ((xx + yy) // 6) % 2
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        base = np.array((210, 190, 40), np.float32) * rng.uniform(0.8, 1.2)
        img = base * (0.55 + 0.45 * mask[..., None]) + rng.normal(0, 12, (size, size, 3))
        paths.append(folder / f"dave_{k:02d}.jpg")
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(paths[-1], quality=92)
    return paths


@pytest.fixture(scope="session")
def identity_run(identity_tfrecords, tmp_path_factory) -> Path:
    """RUN of `trainer fit --task identity` (CLI) on `identity_tfrecords`: MobileNetV2 alpha 0.35
    at 48 px from scratch, 8 epochs."""
    run = tmp_path_factory.mktemp("identity") / "run"
    _invoke("fit", identity_tfrecords, "--out", run, "--task", "identity", *IDENTITY_RUN_ARGS)
    return run


# --- decisions and metrics on known numbers -------------------------------------------------


@pytest.mark.parametrize("probs,threshold,expected", [
    ([[0.7, 0.2, 0.1]], 0.5, [("alice", 0)]),             # confident: the most probable name
    ([[0.4, 0.35, 0.25]], 0.5, [("unknown", -1)]),        # best guess below the threshold
    ([[0.1, 0.5, 0.4]], 0.5, [("bob", 1)]),               # exactly at the threshold still answers
    ([[0.2, 0.1, 0.7]], 0.71, [("unknown", -1)]),         # a threshold above the max prob: unknown
    ([[0.2, 0.1, 0.7], [0.9, 0.05, 0.05]], 0.0, [("carol", 2), ("alice", 0)]),  # threshold 0: always a name
])
def test_decide_answers_unknown_below_the_threshold(probs, threshold, expected):
    from trainer.identity import decide

    got = decide(np.array(probs), PEOPLE, threshold=threshold)
    assert [(name, k) for name, _, k in got] == expected
    assert [p for _, p, _ in got] == pytest.approx(np.max(probs, axis=1))  # the score is the best probability


def test_identity_metrics_on_a_hand_computed_case():
    from trainer.identity import identity_metrics

    # true:      a  a  a  b  b  c ; predicted: a  a  b  b  c  c (probabilities below)
    y = [0, 0, 0, 1, 1, 2]
    probs = [[.9, .05, .05], [.6, .3, .1], [.3, .6, .1], [.1, .8, .1], [.2, .35, .45], [.1, .1, .8]]
    m = identity_metrics(y, probs, labels=PEOPLE, threshold=0.55)
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_person"]["alice"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert m["per_person"]["bob"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert m["per_person"]["carol"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    # threshold 0.55: rows 5 (0.45) is unknown; of the 5 answered, 4 right (row 3 says bob for alice)
    assert (m["unknown"], m["answered"], m["accuracy_answered"]) == (1, pytest.approx(5 / 6), pytest.approx(4 / 5))


@pytest.mark.parametrize("y,pred,expected", [
    ([0, 1, 2], [0, 1, 2], [[1, 0, 0], [0, 1, 0], [0, 0, 1]]),  # all right: the diagonal
    ([0, 0, 0], [1, 1, 2], [[0, 2, 1], [0, 0, 0], [0, 0, 0]]),  # rows are the true person
    ([], [], [[0, 0, 0], [0, 0, 0], [0, 0, 0]]),                # nothing to count
])
def test_confusion_counts_true_rows_against_predicted_columns(y, pred, expected):
    from trainer.identity import confusion

    assert confusion(y, pred, 3).tolist() == expected


@pytest.mark.parametrize("query,expected_name,expected_distance", [
    ([1.0, 0.0], "alice", 0.0),               # on an enrolled face
    ([0.6, 0.8], "bob", 1 - 0.8),             # nearer bob's (0, 1) than alice's (1, 0)
    ([-1.0, 0.0], "bob", 1.0),                # opposite alice: bob (orthogonal) is nearer
])
def test_nearest_enrolled_face_by_cosine_distance(query, expected_name, expected_distance):
    from trainer.enroll import Enrolled, nearest

    store = Enrolled(names=np.array(["alice", "bob"]), embeddings=np.array([[1.0, 0.0], [0.0, 1.0]], np.float32),
                     sources=np.array(["a.jpg", "b.jpg"]), model_sha256="x")
    (name, dist), = nearest(store, np.array([query], np.float32))
    assert name == expected_name and dist == pytest.approx(expected_distance, abs=1e-6)


def test_identity_model_is_preprocess_backbone_and_a_separate_head():
    from trainer.identity import build_identity_model
    from trainer.models import set_trainable

    model = build_identity_model(num_classes=4, image_size=32, alpha=0.35, weights="none")
    assert [layer.name for layer in model.layers][1:4] == ["preprocess", "backbone", "head"]
    assert list(model.output_names) == ["identity"]
    probs = np.asarray(model.predict_on_batch(np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)))["identity"])
    assert probs.shape == (2, 4) and probs.sum(axis=1) == pytest.approx([1.0, 1.0], abs=1e-5)
    assert [la.name for la in model.get_layer("head").layers if "dense" in la.name] == [
        "head_dense1", "head_dense2", "head_dense3"]  # the seeds' three dense layers before the softmax
    assert set_trainable(model, 0) == 0 and model.get_layer("head").trainable  # heads phase: backbone frozen


def test_a_recognizer_needs_two_people():
    from datatool.core.errors import DatatoolError
    from trainer.identity import build_identity_model

    with pytest.raises(DatatoolError, match="at least two"):
        build_identity_model(num_classes=1, image_size=32, alpha=0.35, weights="none")


# --- the trained run ------------------------------------------------------------------------


def test_short_fit_names_held_out_people_and_the_confusion_matrix_sums_to_the_split(identity_run,
                                                                                      identity_tfrecords, tmp_path):
    config = json.loads((identity_run / "config.json").read_text())
    assert config["task"] == "identity" and config["labels"] == PEOPLE and config["status"] == "done"
    assert list(config["outputs"]) == ["identity"]
    assert (identity_run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    with open(identity_run / "history.csv") as f:
        assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(next(csv.DictReader(f)))

    out = tmp_path / "report"
    result = _invoke("evaluate", identity_run, identity_tfrecords, "--out", out)
    m = json.loads((out / "metrics.json").read_text())
    test_size = sum(1 for s in _split_of(identity_tfrecords).values() if s == "test")
    print(f"identity test accuracy {m['accuracy']:.3f} on {m['images']} images")
    assert m["images"] == test_size and np.sum(m["confusion_matrix"]) == test_size
    assert [v["support"] for v in m["per_person"].values()] == np.sum(m["confusion_matrix"], axis=1).tolist()
    assert m["accuracy"] >= 0.88  # 8 of the 9 held-out crops at least (they are 3 per person)
    assert (out / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert "alice" in result.output and "confusion_matrix.png" in result.output
    assert not (identity_run / "metrics.json").exists()  # --out, not RUN


def test_predict_names_face_crops_and_says_unknown_below_the_threshold(identity_run, identity_tfrecords, tmp_path):
    from conftest import write_image
    from trainer.recognizer import Recognizer
    from datatool.core.images import load_rgb

    people = _people_dir(identity_tfrecords)
    held_out = [people.parent / i for i, s in _split_of(identity_tfrecords).items() if s == "test"]
    noise = [write_image(tmp_path / "odd" / f"noise_{k}.jpg", 48, 48, seed=k) for k in range(3)]
    out = tmp_path / "pred"
    _invoke("predict", identity_run, *held_out, "--detector", "none", "--threshold", "0", "--out", out)
    rows = _rows(out)
    assert [r["source"] for r in rows] == [str(p) for p in held_out]
    right = sum(r["name"] == Path(r["source"]).parent.name for r in rows)
    assert right >= len(rows) - 1 and all(r["mode"] == "softmax" for r in rows)
    assert len(list((out / "annotated").rglob("*.jpg"))) == len(held_out)

    # the threshold on known probabilities: exactly the answers below it become 'unknown'
    inputs = held_out + noise
    top = Recognizer(identity_run, mode="softmax").probabilities([load_rgb(p) for p in inputs]).max(axis=1)
    threshold = float(np.sort(top)[len(top) // 3])  # a third of the answers fall below it
    out2 = tmp_path / "pred2"
    _invoke("predict", identity_run, *inputs, "--detector", "none", "--threshold", threshold, "--out", out2)
    rows = _rows(out2)
    assert [r["name"] == "unknown" for r in rows] == [bool(p < threshold) for p in top]
    assert any(r["name"] == "unknown" for r in rows) and any(r["name"] != "unknown" for r in rows)
    assert all(r["label"] in PEOPLE for r in rows)  # the best guess is kept beside 'unknown'


def test_predict_with_a_detector_crops_every_face_found_and_writes_the_names_on_the_photo(identity_run, tmp_path):
    from skimage import data

    from datatool.core.faces import cut_face
    from datatool.core.detect import get_detector
    from datatool.core.draw import save_rgb
    from datatool.core.images import load_rgb
    from trainer.recognizer import find_faces

    photo = tmp_path / "in" / "astronaut.jpg"
    save_rgb(photo, data.astronaut())
    rgb = load_rgb(photo)
    haar = get_detector("haar")
    found = haar.detect(rgb)
    assert found, "Haar finds the astronaut's face"
    faces = find_faces(haar, rgb, margin=0.2, size=48)  # the crop `datatool crop` would cut
    np.testing.assert_array_equal(faces[0][1], cut_face(rgb, found[0].box, margin=0.2, size=48)[0])

    out = tmp_path / "pred"
    result = _invoke("predict", identity_run, photo, "--detector", "haar", "--out", out)
    rows = _rows(out)
    assert len(rows) == len(found) and "faces (softmax)" in result.output
    for r, det in zip(rows, found):
        assert [float(r[k]) for k in ("x_min", "y_min", "x_max", "y_max")] == pytest.approx(det.box.xyxy, abs=0.01)
        assert r["name"] in PEOPLE + ["unknown"]
    annotated = load_rgb(out / "annotated" / "astronaut.jpg")
    x0, y0 = (int(v) for v in found[0].box.xyxy[:2])
    assert np.abs(annotated[y0:y0 + 3, x0:x0 + 40].astype(int) - rgb[y0:y0 + 3, x0:x0 + 40]).mean() > 20  # box drawn


def test_enroll_adds_a_person_and_predict_then_names_them(identity_run, identity_tfrecords, tmp_path):
    import shutil

    from trainer.enroll import load_enrolled

    run = tmp_path / "run"  # a copy: enrolments must not leak into the other tests' run
    shutil.copytree(identity_run, run)
    people = _people_dir(identity_tfrecords)
    split_of = _split_of(identity_tfrecords)
    crops = {s: [people.parent / i for i, sp in split_of.items() if sp == s] for s in ("train", "test")}

    def of(name, split):
        return [p for p in crops[split] if p.parent.name == name]

    _invoke("enroll", run, "--person", "alice", *of("alice", "train"))
    _invoke("enroll", run, "--person", "bob", *of("bob", "train"))
    # carol's faces under a name the softmax never learned: answering "dave" for carol's held-out
    # crops can only come from the enrolment
    _invoke("enroll", run, "--person", "dave", *of("carol", "train")[:3])
    again = _invoke("enroll", run, "--person", "dave", *of("carol", "train"), ok=False)
    assert again.exit_code == 1 and "already enrolled" in again.output and "--overwrite" in again.output
    assert load_enrolled(run).people()["dave"] == 3  # the refused call changed nothing
    result = _invoke("enroll", run, "--person", "dave", *of("carol", "train")[:5], "--overwrite")
    assert "enrolled 5 faces of dave" in result.output
    store = load_enrolled(run)
    assert store.people() == {"alice": len(of("alice", "train")), "bob": len(of("bob", "train")), "dave": 5}
    assert np.linalg.norm(store.embeddings, axis=1) == pytest.approx(1.0, abs=1e-5)  # L2-normalized

    out = tmp_path / "pred"
    result = _invoke("predict", run, *crops["test"], "--detector", "none", "--max-distance", "2", "--out", out)
    rows = _rows(out)
    assert all(r["mode"] == "enrolled" for r in rows) and "(enrolled)" in result.output  # auto: enrolled
    expected = {"alice": "alice", "bob": "bob", "carol": "dave"}
    right = sum(r["name"] == expected[Path(r["source"]).parent.name] for r in rows)
    assert right >= len(rows) - 1, [(r["source"], r["name"]) for r in rows]
    # a distance threshold below every distance: nobody is close enough
    out2 = tmp_path / "pred2"
    _invoke("predict", run, *crops["test"], "--detector", "none", "--max-distance", "0", "--out", out2)
    assert {r["name"] for r in _rows(out2) if float(r["distance"]) > 0} <= {"unknown"}
    # the softmax is still there
    out3 = tmp_path / "pred3"
    _invoke("predict", run, *of("carol", "test"), "--detector", "none", "--mode", "softmax", "--out", out3)
    assert {r["label"] for r in _rows(out3)} <= set(PEOPLE)


def test_enrolled_nearest_neighbour_against_the_softmax_on_the_same_split(identity_run, identity_tfrecords):
    from trainer.enroll import compare_on_split

    r = compare_on_split(identity_run, identity_tfrecords, enroll_split="train", test_split="test")
    print(f"test split ({r['images']} images, {r['enrolled_images']} train images enrolled): "
          f"softmax accuracy {r['softmax_accuracy']:.3f}, nearest enrolled embedding {r['enrolled_accuracy']:.3f}")
    assert r["images"] == sum(1 for s in _split_of(identity_tfrecords).values() if s == "test")
    assert r["softmax_accuracy"] >= 0.88 and r["enrolled_accuracy"] >= 0.66


def test_an_enrolment_store_from_another_model_is_refused(identity_run, tmp_path):
    import shutil

    from trainer.enroll import Enrolled, save_enrolled

    run = tmp_path / "run"
    shutil.copytree(identity_run, run)
    save_enrolled(run, Enrolled(names=np.array(["zed"]), embeddings=np.ones((1, 8), np.float32),
                                sources=np.array(["z.jpg"]), model_sha256="0" * 64))
    face = write_person(tmp_path / "in", 1, seed=3)[0]
    result = _invoke("predict", run, face, "--detector", "none", "--out", tmp_path / "p", ok=False)
    assert result.exit_code == 1 and "another model.keras" in result.output


@pytest.mark.parametrize("args,message", [
    (["enroll", "{run}", "--person", "unknown", "{img}"], "answer for nobody known"),  # the reserved answer
    (["enroll", "{run}", "--person", "a/b", "{img}"], "not usable as a name"),          # not a name
    (["predict", "{run}", "{img}", "--mode", "enrolled", "--detector", "none", "--out", "{tmp}/p"],
     "nobody is enrolled"),                                                              # nothing to compare with
    (["predict", "{run}", "--source", "0"], "no display"),                               # headless live window
    (["predict", "{run}", "{img}", "--threshold", "1.5", "--detector", "none", "--out", "{tmp}/q"],
     "not a probability"),                                                               # a bad threshold
])
def test_recognizer_commands_refuse_bad_requests_clearly(identity_run, tmp_path, args, message):
    from conftest import write_image

    img = write_image(tmp_path / "face.jpg", 48, 48)
    result = _invoke(*[a.format(run=identity_run, img=img, tmp=tmp_path) for a in args], ok=False)
    assert result.exit_code in (1, 2) and message in result.output
    assert not (identity_run / "enrolled.npz").exists()


def test_fit_checks_the_task_against_the_records(identity_tfrecords, tmp_path):
    result = _invoke("fit", identity_tfrecords, "--out", tmp_path / "run", "--task", "detection",
                     "--weights", "none", ok=False)
    assert result.exit_code == 1 and "holds identity records" in result.output
    assert not (tmp_path / "run").exists()


# --- the whole path through the CLIs --------------------------------------------------------


def test_labelled_photos_to_named_predictions_through_the_clis(tmp_path):
    from datatool.cli import cli as datatool_cli
    from test_identity_path import write_photos

    def datatool(*args):
        result = CliRunner().invoke(datatool_cli, [str(a) for a in args])
        assert result.exit_code == 0, result.output + repr(result.exception)

    write_photos(tmp_path / "photos", n=12)
    faces, tfdir, run, out = tmp_path / "faces", tmp_path / "tf", tmp_path / "run", tmp_path / "pred"
    datatool("crop", tmp_path / "photos", "--out", faces, "--label-as-person", "--size", "48")
    datatool("split", faces, "--out", tfdir, "--task", "identity", "--ratios", "0.6,0.2,0.2", "--seed", "0")
    _invoke("fit", tfdir, "--out", run, "--weights", "none", "--image-size", "32", "--alpha", "0.35",
            "--epochs", "1", "--batch-size", "64")
    result = _invoke("predict", run, faces / "people", "--detector", "none", "--out", out)
    rows = _rows(out)
    assert len(rows) == 24 and {r["label"] for r in rows} <= set(PEOPLE)  # 12 photos x 2 faces
    assert "24 faces (softmax)" in result.output
    assert json.loads((run / "config.json").read_text())["labels"] == PEOPLE
