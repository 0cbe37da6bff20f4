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
