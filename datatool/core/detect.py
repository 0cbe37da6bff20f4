"""Face detectors for pre-labelling and face crops: one `--detector` value, one `Detector`.

- `haar`: OpenCV's frontal-face Haar cascade (ships with opencv 4.x). Fast, misses profiles.
- `mtcnn`: the `mtcnn` package (weights inside the package, runs on TensorFlow). Stronger.
- a path: a trained facekit run folder (`RUN/model.keras` + `RUN/config.json`). The model takes
  RGB 0-255 at its input size and outputs `presence` (sigmoid) and `box` (x_min, y_min, x_max,
  y_max normalized to [0, 1]); it finds at most one face per image.

Every detector returns boxes in pixels of the image it was given (continuous coordinates,
clipped to the image), with a score: a probability in [0, 1] for `mtcnn` and runs, the
cascade's level weight (unbounded, larger is surer) for `haar`.
Heavy libraries (cv2, TensorFlow, Keras) are imported when a detector is built.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import DatatoolError
from .sample import Box

BUILTIN = ("haar", "mtcnn")
HAAR_CASCADE = "haarcascade_frontalface_default.xml"


@dataclass(frozen=True)
class Detection:
    """One face found by a detector: `box` in pixels of the input image, `score` (see module doc)."""

    box: Box
    score: float


class Detector:
    """Finds faces in an RGB uint8 image of shape (height, width, 3)."""

    name: str = "detector"

    def detect(self, rgb) -> list[Detection]:  # pragma: no cover - interface
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def _check_rgb(rgb):
    import numpy as np

    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"detect() expects an RGB uint8 array of shape (height, width, 3), "
                         f"got {arr.dtype} {arr.shape}")
    return arr


def _quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ start-up chatter off the terminal unless the user asked for it."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _sorted(dets: list[Detection]) -> list[Detection]:
    return sorted(dets, key=lambda d: -d.score)


class HaarDetector(Detector):
    """OpenCV's `haarcascade_frontalface_default.xml` (scale step 1.1, 5 neighbours)."""

    name = "haar"

    def __init__(self, *, scale_factor: float = 1.1, min_neighbors: int = 5) -> None:
        import cv2

        path = Path(cv2.data.haarcascades) / HAAR_CASCADE
        cascade = cv2.CascadeClassifier(str(path))
        if cascade.empty():
            raise DatatoolError(f"{path}: cannot load OpenCV's Haar cascade (is opencv 4.x installed? "
                                "OpenCV 5 removed the cascades)")
        self._cascade = cascade
        self._scale_factor = scale_factor
        self._min_neighbors = min_neighbors

    def detect(self, rgb) -> list[Detection]:
        import cv2

        rgb = _check_rgb(rgb)
        h, w = rgb.shape[:2]
        gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        # Faces smaller than ~1/20 of the short side are noise in photos of one person.
        side = max(20, min(h, w) // 20)
        if min(h, w) < side:
            return []
        rects, _, weights = self._cascade.detectMultiScale3(
            gray, scaleFactor=self._scale_factor, minNeighbors=self._min_neighbors,
            minSize=(side, side), outputRejectLevels=True)
        dets = []
        for (x, y, bw, bh), weight in zip(rects, weights):
            box = Box.from_xywh(float(x), float(y), float(bw), float(bh)).clip(w, h)
            dets.append(Detection(box, float(weight)))
        return _sorted(dets)


class MtcnnDetector(Detector):
    """The `mtcnn` package (P-Net, R-Net, O-Net; weights ship inside the package)."""

    name = "mtcnn"

    def __init__(self, *, min_face_size: int = 20) -> None:
        _quiet_tensorflow()
        try:
            import tensorflow as tf
            from mtcnn import MTCNN
        except ImportError as e:
            raise DatatoolError(f"the mtcnn detector needs the 'mtcnn' and 'tensorflow' packages "
                                f"({e}); pip install 'mtcnn>=1.0,<2' tensorflow, or use --detector haar") from e
        device = "GPU:0" if tf.config.list_physical_devices("GPU") else "CPU:0"
        self._mtcnn = MTCNN(stages="face_and_landmarks_detection", device=device)
        self._min_face_size = min_face_size

    def detect(self, rgb) -> list[Detection]:
        rgb = _check_rgb(rgb)
        h, w = rgb.shape[:2]
        if min(h, w) < 12:  # smaller than P-Net's window: nothing to find
            return []
        found = self._mtcnn.detect_faces(rgb, box_format="xyxy", min_face_size=self._min_face_size)
        dets = []
        for face in found or []:
            x0, y0, x1, y1 = (float(v) for v in face["box"])
            box = Box.from_corners(x0, y0, x1, y1).clip(w, h)
            if box.width > 0 and box.height > 0:
                dets.append(Detection(box, float(face["confidence"])))
        return _sorted(dets)


def _input_hw(config: dict, model, run: Path) -> tuple[int, int]:
    size = config.get("image_size")
    if size is None:
        shape = getattr(model, "input_shape", None)
        if isinstance(shape, list):
            shape = shape[0]
        if not shape or shape[1] is None or shape[2] is None:
            raise DatatoolError(f"{run / 'config.json'}: image_size: missing, and the model's input has no fixed size")
        return int(shape[1]), int(shape[2])
    if isinstance(size, int) and size > 0:
        return size, size
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size):
        return int(size[0]), int(size[1])
    raise DatatoolError(f"{run / 'config.json'}: image_size: expected a positive integer or [height, width], got {size!r}")


class RunDetector(Detector):
    """A trained facekit detection run: `RUN/model.keras` (+ `RUN/config.json`), one face at most.

    The face is reported when `presence` >= `threshold` (config `presence_threshold`, else 0.5).
    """

    def __init__(self, run: Path) -> None:
        run = Path(run)
        if run.is_file() and run.suffix == ".keras":
            run = run.parent
        self.run = run
        self.name = f"run:{run.name}"
        model_path = run / "model.keras"
        if not model_path.is_file():
            raise DatatoolError(f"{run}: not a trainer run folder (no model.keras inside); "
                                f"use --detector haar, mtcnn, or the folder `trainer fit --out` wrote")
        config: dict = {}
        config_path = run / "config.json"
        if config_path.is_file():
            try:
                config = json.loads(config_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise DatatoolError(f"{config_path}: not valid JSON ({e})") from e
            if not isinstance(config, dict):
                raise DatatoolError(f"{config_path}: expected a JSON object")
        task = config.get("task", "detection")
        if task != "detection":
            raise DatatoolError(f"{config_path}: task: this run is a {task!r} model, not a face detector")
        threshold = config.get("presence_threshold", 0.5)
        if not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
            raise DatatoolError(f"{config_path}: presence_threshold: expected a number in [0, 1], got {threshold!r}")
        self.threshold = float(threshold)

        _quiet_tensorflow()
        import keras

        # compile=False: the trainer's losses are not needed to predict, and its models use
        # builtin layers only, so datatool needs nothing from `trainer` to load one.
        try:
            self._model = keras.saving.load_model(model_path, compile=False)
        except Exception as e:  # Keras raises many kinds for a bad or foreign file
            raise DatatoolError(f"{model_path}: cannot load the Keras model ({type(e).__name__}: {e})") from e
        self.input_hw = _input_hw(config, self._model, run)

    def _outputs(self, out) -> tuple[float, list[float]]:
        import numpy as np

        if isinstance(out, dict):
            named = out
        else:
            out = list(out) if isinstance(out, (list, tuple)) else [out]
            names = list(getattr(self._model, "output_names", None) or [])
            named = dict(zip(names, out)) if len(names) == len(out) else {}
            if not ("presence" in named and "box" in named):
                # Unnamed outputs: tell them apart by width (1 score vs 4 coordinates).
                named = {("box" if np.asarray(o).shape[-1] == 4 else "presence"): o for o in out}
        if "presence" not in named or "box" not in named:
            raise DatatoolError(f"{self.run / 'model.keras'}: expected outputs 'presence' and 'box', "
                                f"got {sorted(named)}")
        presence = float(np.asarray(named["presence"]).reshape(-1)[0])
        box = [float(v) for v in np.asarray(named["box"]).reshape(-1)[:4]]
        return presence, box

    def detect(self, rgb) -> list[Detection]:
        import cv2
        import numpy as np

        rgb = _check_rgb(rgb)
        h, w = rgb.shape[:2]
        ih, iw = self.input_hw
        small = cv2.resize(rgb, (iw, ih), interpolation=cv2.INTER_AREA if iw < w else cv2.INTER_LINEAR)
        x = small.astype("float32")[None]
        presence, (x0, y0, x1, y1) = self._outputs(self._model(x, training=False))
        if not np.isfinite(presence) or presence < self.threshold:
            return []
        # The model's box is normalized to [0, 1]: back to pixels of the image as given.
        box = Box.from_corners(x0 * w, y0 * h, x1 * w, y1 * h).clip(w, h)
        if box.width <= 0 or box.height <= 0:
            return []
        return [Detection(box, presence)]


def get_detector(spec: str) -> Detector:
    """The detector named by a `--detector` value: `haar`, `mtcnn` or the path of a trainer run folder."""
    spec = str(spec).strip()
    if spec.lower() == "haar":
        return HaarDetector()
    if spec.lower() == "mtcnn":
        return MtcnnDetector()
    path = Path(spec).expanduser()
    if path.exists():
        return RunDetector(path)
    raise DatatoolError(f"unknown detector {spec!r}: choose one of {', '.join(BUILTIN)}, "
                        f"or the path of a `trainer fit` run folder (containing model.keras)")

