"""Shared test set-up: quiet, offline, headless; tiny generated images.

Session-wide fixtures that are expensive (one tiny TFRecord set, one trained run) live here
so every test module reuses them.
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
if "FACEKIT_CACHE_DIR" not in os.environ:  # the hash cache: one per test run, never the user's
    import tempfile

    os.environ["FACEKIT_CACHE_DIR"] = tempfile.mkdtemp(prefix="facekit-test-cache-")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def write_image(path: Path, width: int = 64, height: int = 48, *, seed: int = 0, box=None, fmt: str | None = None) -> Path:
    """Write a noise image (optionally with a bright square at pixel box `(x0, y0, x1, y1)`)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 90, size=(height, width, 3), dtype=np.uint8)
    if box is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        arr[y0:y1, x0:x1] = (235, 200, 170)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt or ("PNG" if path.suffix.lower() == ".png" else "JPEG"), quality=95)
    return path


def write_labelme_json(image_path: Path, boxes, *, width: int, height: int, label: str = "face", extra=None) -> Path:
    """A labelme JSON beside `image_path` with rectangle shapes given as corner pairs."""
    import json

    shapes = [{"label": label, "points": [[b[0], b[1]], [b[2], b[3]]], "group_id": None, "description": "",
               "shape_type": "rectangle", "flags": {}, "mask": None} for b in boxes]
    data = {"version": "6.3.1", "flags": {}, "shapes": shapes, "imagePath": Path(image_path).name,
            "imageData": None, "imageHeight": height, "imageWidth": width}
    if extra:
        data.update(extra)
    jp = Path(image_path).with_suffix(".json")
    jp.write_text(json.dumps(data, indent=2))
    return jp


@pytest.fixture
def tiny_dataset(tmp_path) -> Path:
    """A dataset root with 4 labeled faces, 1 negative and 1 unlabeled image (64x48 JPEGs)."""
    root = tmp_path / "ds"
    images = root / "images"
    for k in range(4):
        box = (8 + k * 3, 6 + k, 30 + k * 3, 30 + k)
        img = write_image(images / f"face_{k}.jpg", seed=k, box=box)
        write_labelme_json(img, [box], width=64, height=48)
    neg = write_image(images / "neg_0.jpg", seed=10)
    write_labelme_json(neg, [], width=64, height=48)
    write_image(images / "unlabeled_0.jpg", seed=11)
    return root


# --- TFRecord fixtures (built with `datatool.split.split`, shared by split/inspect/trainer tests) ---

def make_face_dataset(root: Path, *, n: int = 120, size: int = 64, negatives: float = 0.2, seed: int = 0) -> Path:
    """A labelme dataset of `n` noise JPEGs, each with one bright square "face" (labelme box on it)
    except ~`negatives` of them (a JSON with no shapes). Every image is its own group."""
    rng = np.random.default_rng(seed)
    images = Path(root) / "images"
    for k in range(n):
        path = images / f"img_{k:04d}.jpg"
        if rng.random() < negatives:
            write_image(path, size, size, seed=seed * 100_000 + k)
            write_labelme_json(path, [], width=size, height=size)
        else:
            side = int(rng.integers(size // 5, size // 2))
            x0, y0 = (int(v) for v in rng.integers(0, size - side, size=2))
            box = (x0, y0, x0 + side, y0 + side)
            write_image(path, size, size, seed=seed * 100_000 + k, box=box)
            write_labelme_json(path, [box], width=size, height=size)
    return Path(root)


def make_people_dataset(root: Path, *, per_person: int = 20, size: int = 48, seed: int = 0) -> Path:
    """`people/{alice,bob,carol}/*.jpg`: three identities a tiny model learns from scratch -
    alice is reddish with horizontal stripes, bob greenish with vertical stripes, carol bluish
    with a checkerboard - plus per-image noise and brightness jitter."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    patterns = {
        "alice": ((200, 60, 60), (yy // 6) % 2),
        "bob": ((60, 190, 70), (xx // 6) % 2),
        "carol": ((60, 80, 210), ((xx // 8) + (yy // 8)) % 2),
    }
    for name, (color, mask) in patterns.items():
        folder = Path(root) / "people" / name
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(per_person):
            base = np.array(color, np.float32) * rng.uniform(0.8, 1.2)
            img = base * (0.55 + 0.45 * mask[..., None]) + rng.normal(0, 12, (size, size, 3))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{name}_{k:03d}.jpg", quality=92)
    return Path(root)


@pytest.fixture(scope="session")
def detection_tfrecords(tmp_path_factory) -> Path:
    """TFDIR from `split` (ratios .7/.15/.15, seed 0) of 120 64x64 JPEGs: ~96 with one face box,
    ~24 negatives, each its own group. Holds train (2 shards), val, test shards, split.csv,
    dataset.json (label map {"face": 1})."""
    from datatool.split import split

    base = tmp_path_factory.mktemp("detection_tf")
    src = make_face_dataset(base / "ds")
    out = base / "tf"
    split(src, out=out, ratios=(0.7, 0.15, 0.15), seed=0, progress=False)
    return out


@pytest.fixture(scope="session")
def identity_tfrecords(tmp_path_factory) -> Path:
    """TFDIR from `split --task identity` of 3 synthetic people x 20 48x48 JPEGs (labels.txt:
    alice, bob, carol -> 0, 1, 2), stratified per person over train/val/test (.7/.15/.15, seed 0)."""
    from datatool.split import split

    base = tmp_path_factory.mktemp("identity_tf")
    src = make_people_dataset(base / "ds")
    out = base / "tf"
    split(src, out=out, task="identity", ratios=(0.7, 0.15, 0.15), seed=0, progress=False)
    return out


# --- trainer: one short fit per head, shared by the evaluate / predict / export tests ---

TRAINED_RUN_ARGS = ["--weights", "none", "--image-size", "64", "--alpha", "0.35", "--epochs", "30",
                    "--batch-size", "16", "--lr", "3e-3", "--patience", "30", "--seed", "0"]
# the one-box head as runs made before --head existed were: it must keep loading, predicting,
# evaluating and exporting, so a short fit is enough
SINGLE_RUN_ARGS = ["--head", "single", "--weights", "none", "--image-size", "64", "--alpha", "0.35",
                   "--epochs", "4", "--batch-size", "16", "--lr", "2e-3", "--seed", "0"]


def _fit_run(tfdir: Path, run: Path, args) -> Path:
    from click.testing import CliRunner

    from trainer.cli import cli

    result = CliRunner().invoke(cli, ["fit", str(tfdir), "--out", str(run), *args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return run


@pytest.fixture(scope="session")
def trained_run(detection_tfrecords, tmp_path_factory) -> Path:
    """RUN of `trainer fit` (through its CLI) on `detection_tfrecords` with the default (dense)
    head: MobileNetV2 alpha 0.35 at 64 px from scratch (weights none, so one phase training
    everything), 30 epochs."""
    return _fit_run(detection_tfrecords, tmp_path_factory.mktemp("trained") / "run", TRAINED_RUN_ARGS)


@pytest.fixture(scope="session")
def single_run(detection_tfrecords, tmp_path_factory) -> Path:
    """RUN of a short `trainer fit --head single` (the tutorials' one-box model) on
    `detection_tfrecords`, with `head` removed from its config.json as in runs made before heads
    had names."""
    import json

    run = _fit_run(detection_tfrecords, tmp_path_factory.mktemp("single") / "run", SINGLE_RUN_ARGS)
    config = json.loads((run / "config.json").read_text())
    config.pop("head")
    config["fit"].pop("head")
    (run / "config.json").write_text(json.dumps(config))
    return run
