"""What a face detector is and what it returns: `Detection` and the `Detector` interface.

These types sit below both the detectors built into datatool (`datatool.core.detect`: Haar,
mtcnn) and the trained run detector (`trainer.detector.RunDetector`), so either side can import
them without importing the other.
"""

from __future__ import annotations

from dataclasses import dataclass

from .sample import Box


@dataclass(frozen=True)
class Detection:
    """One face found by a detector: `box` in pixels of the input image, `score` (larger is surer:
    a probability in [0, 1] for mtcnn and trained runs, the cascade's level weight for Haar)."""

    box: Box
    score: float


class Detector:
    """Finds faces in RGB uint8 images of shape (height, width, 3).

    `detect` returns every face it finds (score at or above the detector's threshold), best
    first, boxes clipped to the image; an empty list when there is none."""

    name: str = "detector"

    def detect(self, rgb) -> list[Detection]:  # pragma: no cover - interface
        raise NotImplementedError

    def detect_many(self, frames) -> list[list[Detection]]:
        """`detect` for each frame; detectors that batch (a trained run) override it."""
        return [self.detect(f) for f in frames]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def check_rgb(rgb):
    """`rgb` as a numpy array, or a `ValueError` saying what a detector expects."""
    import numpy as np

    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"detect() expects an RGB uint8 array of shape (height, width, 3), "
                         f"got {arr.dtype} {arr.shape}")
    return arr


def best_first(dets: list[Detection]) -> list[Detection]:
    return sorted(dets, key=lambda d: -d.score)
