"""The trained run as a face detector: one `RunDetector`, used alike by `trainer predict` (images,
video, live), a recognizer's `--detector RUN`, and datatool's `prelabel` / `capture --crop-faces`
/ `crop` (through `datatool.core.detect.get_detector`).

A frame of any size becomes the model's input through `trainer.data.resize_images`, the bilinear
resize the training pipeline applied to every record, so the model sees at predict time what it
saw in training, and every caller gets the same boxes for the same frame.

What the model's outputs mean is the saved model's contract (DESIGN.md), not a head's code:
- `boxes` `(K, 4)` and `scores` `(K,)` per image, after decoding and NMS: every face;
- else `presence` (a probability) and `box` `(4,)`: the one-box head, at most one face.
Boxes are `[x_min, y_min, x_max, y_max]` normalized to [0, 1]; a model with unnamed outputs is
read by their widths (1: presence, 4: box).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from datatool.core.detection import Detection, Detector, best_first, check_rgb
from datatool.core.errors import DatatoolError
from datatool.core.sample import Box

DEFAULT_THRESHOLD = 0.5


def run_folder(path: Path) -> Path:
    """The run folder for a `--detector` value: the folder itself, or the folder of its `model.keras`."""
    path = Path(path)
    return path.parent if path.is_file() and path.suffix == ".keras" else path


def _read_config(run: Path) -> dict:
    """`RUN/config.json`, or {} for a folder that has only `model.keras` (its input size is then
    read from the model)."""
    path = run / "config.json"
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DatatoolError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(config, dict):
        raise DatatoolError(f"{path}: expected a JSON object")
    return config


def _input_hw(config: dict, model, run: Path) -> tuple[int, int]:
    size = config.get("image_size")
    if size is None:
        shape = getattr(model, "input_shape", None)
        if isinstance(shape, list):
            shape = shape[0]
        if not shape or shape[1] is None or shape[2] is None:
            raise DatatoolError(f"{run / 'config.json'}: image_size: missing, and the model's input has no fixed size")
        return int(shape[1]), int(shape[2])
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size, size
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size):
        return int(size[0]), int(size[1])
    raise DatatoolError(f"{run / 'config.json'}: image_size: expected a positive integer or [height, width], "
                        f"got {size!r}")


class RunDetector(Detector):
    """A trained facekit detection run (`RUN/model.keras`, `RUN/config.json`).

    `threshold`: the least score reported as a face (default: the run's `presence_threshold`,
    else 0.5). `detect` returns every face at or above it, best first (one at most for the
    one-box head)."""

    def __init__(self, run: Path, *, threshold: float | None = None) -> None:
        run = run_folder(run)
        self.run = run
        self.name = f"run:{run.name}"
        model_path = run / "model.keras"
        if not model_path.is_file():
            raise DatatoolError(f"{run}: not a trainer run folder (no model.keras inside); "
                                f"use --detector haar, mtcnn, or the folder `trainer fit --out` wrote")
        config = _read_config(run)
        config_path = run / "config.json"
        task = config.get("task", "detection")
        if task != "detection":
            raise DatatoolError(f"{config_path}: task: this run is a {task!r} model, not a face detector")
        if threshold is None:
            threshold = config.get("presence_threshold", DEFAULT_THRESHOLD)
            if not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
                raise DatatoolError(f"{config_path}: presence_threshold: expected a number in [0, 1], "
                                    f"got {threshold!r}")
        self.threshold = float(threshold)
        self.config = config

        import keras

        from .models import register_custom_objects

        register_custom_objects()  # the dense head's layers
        # compile=False: predicting needs no loss
        try:
            self.model = keras.saving.load_model(model_path, compile=False)
        except Exception as e:  # Keras raises many kinds for a bad or foreign file
            raise DatatoolError(f"{model_path}: cannot load the Keras model ({type(e).__name__}: {e})") from e
        self.input_hw = _input_hw(config, self.model, run)

    def _named(self, out) -> dict:
        if isinstance(out, dict):
            return out
        out = list(out) if isinstance(out, (list, tuple)) else [out]
        names = list(getattr(self.model, "output_names", None) or [])
        named = dict(zip(names, out)) if len(names) == len(out) else {}
        if not ({"presence", "box"} <= set(named) or {"scores", "boxes"} <= set(named)):
            # unnamed outputs: tell them apart by width (1 score vs 4 coordinates)
            named = {("box" if np.asarray(o).shape[-1] == 4 else "presence"): o for o in out}
        return named

    def candidates(self, out) -> tuple[np.ndarray, np.ndarray]:
        """The model's outputs for a batch of n frames -> `scores` `(n, K)` and `boxes` `(n, K, 4)`
        normalized, corners ordered: every face the model proposes, before any threshold."""
        from .metrics import order_corners

        named = self._named(out)
        if "scores" in named and "boxes" in named:
            scores = np.asarray(named["scores"], np.float64)
            boxes = np.asarray(named["boxes"], np.float64)
        elif "presence" in named and "box" in named:
            scores = np.asarray(named["presence"], np.float64).reshape(-1, 1)
            boxes = np.asarray(named["box"], np.float64).reshape(-1, 1, 4)
        else:
            raise DatatoolError(f"{self.run / 'model.keras'}: expected outputs 'boxes' and 'scores', or "
                                f"'presence' and 'box', got {sorted(named)}")
        n = len(scores)
        scores = scores.reshape(n, -1)
        boxes = order_corners(np.clip(boxes.reshape(-1, 4), 0.0, 1.0)).reshape(n, -1, 4)
        return scores, boxes

    def detect_many(self, frames, *, threshold: float | None = None) -> list[list[Detection]]:
        """Every face at or above `threshold` (default the detector's) in each RGB frame, best
        first, boxes in the pixels of that frame; one model call for the whole batch."""
        from .data import model_input

        frames = [check_rgb(f) for f in frames]
        if not frames:
            return []
        threshold = self.threshold if threshold is None else float(threshold)
        scores, boxes = self.candidates(self.model.predict_on_batch(model_input(frames, self.input_hw)))
        found = []
        for rgb, s, b in zip(frames, scores, boxes):
            h, w = rgb.shape[:2]
            dets = []
            for score, (x0, y0, x1, y1) in zip(s, b):
                if not np.isfinite(score) or score < threshold or not np.isfinite((x0, y0, x1, y1)).all():
                    continue
                box = Box(x0 * w, y0 * h, x1 * w, y1 * h).clip(w, h)
                if box.width > 0 and box.height > 0:
                    dets.append(Detection(box, float(score)))
            found.append(best_first(dets))
        return found

    def detect(self, rgb, *, threshold: float | None = None) -> list[Detection]:
        return self.detect_many([rgb], threshold=threshold)[0]
