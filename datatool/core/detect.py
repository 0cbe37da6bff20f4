"""Face detectors for pre-labelling and face crops: one `--detector` value, one `Detector`.

- `haar`: OpenCV's frontal-face Haar cascade (ships with opencv 4.x). Fast, misses profiles.
- `mtcnn`: the `mtcnn` package (weights inside the package, runs on TensorFlow). Stronger.
- a path: a trained facekit detection run folder, read by `trainer.detector.RunDetector` - the
  same detector `trainer predict` uses, so both resize a frame and read the model alike.

Every detector returns boxes in pixels of the image it was given (continuous coordinates,
clipped to the image), with a score: a probability in [0, 1] for `mtcnn` and runs, the
cascade's level weight (unbounded, larger is surer) for `haar`.
Heavy libraries (cv2, TensorFlow, Keras) are imported when a detector is built.
"""

from __future__ import annotations

from pathlib import Path

from .detection import Detection, Detector, best_first, check_rgb
from .errors import DatatoolError
from .sample import Box

__all__ = ["BUILTIN", "Detection", "Detector", "HaarDetector", "MtcnnDetector", "get_detector"]

BUILTIN = ("haar", "mtcnn")
HAAR_CASCADE = "haarcascade_frontalface_default.xml"


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

        rgb = check_rgb(rgb)
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
        return best_first(dets)


class MtcnnDetector(Detector):
    """The `mtcnn` package (P-Net, R-Net, O-Net; weights ship inside the package)."""

    name = "mtcnn"

    def __init__(self, *, min_face_size: int = 20) -> None:
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
        rgb = check_rgb(rgb)
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
        return best_first(dets)


def get_detector(spec: str) -> Detector:
    """The detector named by a `--detector` value: `haar`, `mtcnn` or the path of a trainer run folder."""
    spec = str(spec).strip()
    if spec.lower() == "haar":
        return HaarDetector()
    if spec.lower() == "mtcnn":
        return MtcnnDetector()
    path = Path(spec).expanduser()
    if path.exists():
        # imported here: the run detector needs TensorFlow and the trainer's model contract;
        # it imports only the types below this module (`datatool.core.detection`)
        from trainer.detector import RunDetector

        return RunDetector(path)
    raise DatatoolError(f"unknown detector {spec!r}: choose one of {', '.join(BUILTIN)}, "
                        f"or the path of a `trainer fit` run folder (containing model.keras)")

