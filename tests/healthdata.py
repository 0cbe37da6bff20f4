"""Generated datasets for the dataset-health tests: smooth random scenes (so perceptual hashes
tell them apart), their shifted and re-encoded copies, each with a labelme box."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def scene(seed: int, h: int = 240, w: int = 320):
    """A smooth random colour 'scene' (RGB uint8): blobs of light on a gradient, with mild noise."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.tile(np.linspace(30, 120, w)[None, :, None], (h, 1, 3)) + rng.uniform(-20, 20, 3)
    for _ in range(6):
        cx, cy, r = rng.integers(0, w), rng.integers(0, h), rng.integers(15, 60)
        cv2.circle(img, (int(cx), int(cy)), int(r), [float(v) for v in rng.integers(60, 255, 3)], -1)
    img = cv2.GaussianBlur(img, (0, 0), 1) + rng.normal(0, 8, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def moved(rgb, dx: int = 4, dy: int = 3):
    """The same frame moved by (dx, dy) px, edges repeated (a webcam frame a moment later)."""
    import cv2

    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(rgb, m, (rgb.shape[1], rgb.shape[0]), borderMode=cv2.BORDER_REPLICATE)


def save(path: Path, rgb, *, box=(100, 60, 180, 150), group: str | None = None, quality: int = 90) -> Path:
    """Write `rgb` as a JPEG and a labelme JSON beside it with one face box (and a facekit group)."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    data = {"version": "6.3.1", "flags": {}, "imagePath": path.name, "imageData": None,
            "imageHeight": rgb.shape[0], "imageWidth": rgb.shape[1],
            "shapes": [{"label": "face", "points": [[box[0], box[1]], [box[2], box[3]]], "group_id": None,
                        "description": "", "shape_type": "rectangle", "flags": {}, "mask": None}]}
    if group:
        data["facekit"] = {"group": group}
    path.with_suffix(".json").write_text(json.dumps(data))
    return path


def scene_pairs(root: Path, n: int = 12) -> Path:
    """A dataset of `n` scenes, each captured twice (the second moved and re-encoded), every image
    its own group (as two separate capture sessions would give)."""
    images = Path(root) / "images"
    for k in range(n):
        rgb = scene(k)
        save(images / f"s{k:02d}_a.jpg", rgb, group=f"{k:02d}a" * 8)
        save(images / f"s{k:02d}_b.jpg", moved(rgb), group=f"{k:02d}b" * 8, quality=75)
    return Path(root)
