"""`audit`: compare the human boxes of a labelme dataset with a face detector's and rank the
likely label mistakes (cleanlab's `find_label_issues` for detection and FiftyOne's
"mistakenness" do this with a model's predictions; here the model is any `--detector`).

For each labeled image the detector runs once; boxes are matched by IoU:
- **missed-face**: a detection the detector is confident about (confidence >= `min_confidence`)
  that no human box overlaps (best IoU < `NEAR`): a face nobody boxed. Score = the confidence.
- **loose-box**: a human box whose best IoU with a detection is in [`NEAR`, `iou`): drawn
  loosely or off the face. Score = (1 - IoU) x the detection's confidence.
- **no-face**: a human box with no detection near it (best IoU < `NEAR`): a box on the
  background, or a face the detector cannot see (profiles for Haar). Score = `NO_FACE_SCORE`
  x how much of the detector's working range the box lies in (a box smaller than the smallest
  face the detector looks for cannot be judged and gets half), so a confident missed face
  outranks it.

Detector scores are turned into a confidence in [0, 1]: `mtcnn` and trained runs give a
probability already; Haar's level weight (unbounded, a few units for a clear face) becomes
`1 - exp(-weight / 3)`, an ordering heuristic that maps a weight of 2 to 0.5 and 7 to 0.9.

Unlabeled images are skipped (counted); an image that does not decode is reported by name and
skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from .core.errors import DatatoolError, ImageError
from .core.issues import Issue
from .core.suspects import Suspect, suspects_document

DEFAULT_IOU = 0.5
NEAR = 0.1  # below this IoU two boxes are about different things
NO_FACE_SCORE = 0.6
DEFAULT_MIN_CONFIDENCE = 0.5
HAAR_WEIGHT_SCALE = 3.0


def confidence(score: float, detector_name: str) -> float:
    """A detector's score as a confidence in [0, 1] (see module doc for Haar's weights)."""
    if detector_name == "haar":
        return 1.0 - math.exp(-max(0.0, float(score)) / HAAR_WEIGHT_SCALE)
    return min(1.0, max(0.0, float(score)))


@dataclass
class AuditResult:
    """What `audit` found: suspects ranked most suspicious first, counts and skipped files."""

    root: Path
    detector: str
    images: int = 0  # labeled images audited
    unlabeled: int = 0  # skipped: no JSON
    suspects: list[Suspect] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)  # unreadable images and JSONs, skipped

    def table(self):
        """The suspects as a pandas DataFrame (rank, image_id, reason, score, iou, box, message)."""
        import pandas as pd

        rows = [{"rank": k + 1, "image_id": s.image_id, "reason": s.reason, "score": round(s.score, 3),
                 "iou": round(s.iou, 2), "box": " ".join(f"{v:.0f}" for v in s.box), "message": s.message}
                for k, s in enumerate(self.suspects)]
        return pd.DataFrame(rows, columns=["rank", "image_id", "reason", "score", "iou", "box", "message"])

    def to_dict(self) -> dict:
        return suspects_document(self.suspects, dataset=str(self.root), detector=self.detector, images=self.images)


def audit_sample(sample, detections, *, detector_name: str, iou: float = DEFAULT_IOU,
                 min_confidence: float = DEFAULT_MIN_CONFIDENCE, min_face: float = 0.0) -> list[Suspect]:
    """The suspects in one image, given its `Sample` (human boxes) and the detector's `Detection`s."""
    humans = list(sample.boxes)
    dets = [(d.box, confidence(d.score, detector_name)) for d in detections]
    out = []
    img, key = str(sample.image_path), sample.image_id
    for box, conf in dets:
        best = max((box.iou(h) for h in humans), default=0.0)
        if best < NEAR and conf >= min_confidence:
            out.append(Suspect(img, key, "missed-face", box.xyxy, conf, best,
                               f"the detector finds a face (confidence {conf:.2f}) that no box covers"))
    for h in humans:
        scored = [(h.iou(b), conf) for b, conf in dets]
        best, conf = max(scored, default=(0.0, 0.0))
        if NEAR <= best < iou:
            out.append(Suspect(img, key, "loose-box", h.xyxy, (1.0 - best) * conf, best,
                               f"best IoU with a detection is {best:.2f} < {iou:g}: box loose or off the face"))
        elif best < NEAR:
            judged = 1.0 if min(h.width, h.height) >= min_face else 0.5
            out.append(Suspect(img, key, "no-face", h.xyxy, NO_FACE_SCORE * judged, best,
                               "no detection near this box: no face there, or one the detector cannot see"
                               + ("" if judged == 1.0 else " (smaller than the detector's smallest face)")))
    return out


def audit(root: Path, *, detector="haar", iou: float = DEFAULT_IOU, min_confidence: float = DEFAULT_MIN_CONFIDENCE,
          progress: bool = False) -> AuditResult:
    """Run `detector` (a `--detector` value or a `Detector`) over every labeled image under `root`
    and rank the suspects (see module doc). An empty dataset is a `DatatoolError`."""
    from .core.detect import Detector, get_detector
    from .core.images import load_rgb
    from .dataset import load_dataset

    if not 0 < iou <= 1:
        raise DatatoolError(f"--iou: expected a number in (0, 1], got {iou!r}")
    if not 0 <= min_confidence <= 1:
        raise DatatoolError(f"--min-confidence: expected a number in [0, 1], got {min_confidence!r}")
    ds = load_dataset(root, read_sizes=False)
    if not ds.samples:
        raise DatatoolError(f"{root}: no images found (a dataset is a folder with images/ inside)")
    labeled = ds.labeled
    if not labeled:
        raise DatatoolError(f"{root}: no labeled images to audit ({len(ds.samples)} images, none with a "
                            "labelme JSON; label some first with `datatool label`)")
    det = detector if isinstance(detector, Detector) else get_detector(detector)
    name = det.name
    result = AuditResult(root=Path(root), detector=name, unlabeled=len(ds.unlabeled),
                         issues=[i for i in ds.issues if i.severity == "error"])
    items = labeled
    if progress:
        from tqdm import tqdm

        items = tqdm(labeled, desc="audit", unit="img", leave=False)
    suspects = []
    for s in items:
        try:
            rgb = load_rgb(s.image_path)
        except ImageError as e:
            result.issues.append(Issue.from_error(e, code="bad-image", file=s.image_path))
            continue
        h, w = rgb.shape[:2]
        min_face = max(20, min(h, w) // 20) if name == "haar" else 0.0  # HaarDetector's smallest window
        suspects += audit_sample(s, det.detect(rgb), detector_name=name, iou=iou, min_confidence=min_confidence,
                                 min_face=min_face)
        result.images += 1
    result.suspects = sorted(suspects, key=lambda x: (-x.score, x.image_id, x.box))
    return result


def suspects_sheet(result: AuditResult, path: Path, *, top: int = 24, cell: int = 320) -> int:
    """Draw the `top` suspects (suspect box in red, caption: rank, reason, score) on one sheet.

    Returns how many were drawn; nothing is written when there is none.
    """
    from .core.draw import contact_sheet, draw_boxes, save_rgb
    from .core.images import load_rgb

    tiles, titles = [], []
    for k, s in enumerate(result.suspects[:top]):
        try:
            rgb = load_rgb(Path(s.image))
        except ImageError:
            continue
        tiles.append(draw_boxes(rgb, [s.box], captions=[f"#{k + 1} {s.reason}"], color=(230, 30, 30)))
        titles.append(f"#{k + 1} {s.score:.2f} {s.image_id}")
    if tiles:
        save_rgb(path, contact_sheet(tiles, titles=titles, cell=cell))
    return len(tiles)
