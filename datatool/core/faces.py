"""Face-crop geometry and person-name rules, shared by `datatool capture --crop-faces`,
`datatool crop` and the trainer's recognizer (which must cut faces the way it was trained).

The crop is square, so a face keeps its proportions whatever the box's shape and every crop
resizes to `size` x `size` without stretching: the side is the box's longer side grown by
`margin` x that side on each edge, centred on the box. Near a border the square is *shifted*
to stay inside the image (no padding: black bars would be a feature the model learns), and
only shrunk when the image itself is smaller.
"""

from __future__ import annotations

from .sample import Box

# Labels that say "a face" rather than whose.
GENERIC_LABELS = frozenset({"face", "faces", "head", "person", "people", "human"})
DEFAULT_MARGIN = 0.2  # of the box's longer side, on each edge
DEFAULT_SIZE = 160  # crop side in pixels: capture --crop-faces and crop write the same size


def person_name_problem(name: str) -> str | None:
    """Why `name` cannot be a `people/NAME/` folder, or None when it can."""
    if not name or not name.strip():
        return "empty name"
    if name != name.strip():
        return "leading or trailing spaces"
    if name.startswith("."):
        return "starts with '.' (a hidden folder)"
    bad = sorted({c for c in name if c in '/\\:*?"<>|' or ord(c) < 32})
    if bad:
        return f"contains {' '.join(repr(c) for c in bad)}"
    return None


def is_generic(label: str, *, allow_labels=()) -> bool:
    """True for labels that say "a face" rather than whose (`face`, `head`, ...), unless allowed."""
    allowed = {a.strip().lower() for a in allow_labels}
    return label.strip().lower() in GENERIC_LABELS and label.strip().lower() not in allowed


def face_square(box: Box, *, width: int, height: int, margin: float = DEFAULT_MARGIN) -> Box:
    """The square (integer pixel corners) a face crop is cut from; see the module docstring.

    Side `max(box.width, box.height) * (1 + 2 * margin)`, centred on the box, shifted to lie
    inside the `width` x `height` image and shrunk to the image's shorter side if larger.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    side = max(box.width, box.height) * (1 + 2 * margin)
    side = max(1, min(int(round(side)), int(width), int(height)))
    cx, cy = (box.x_min + box.x_max) / 2, (box.y_min + box.y_max) / 2
    x0 = int(round(min(max(cx - side / 2, 0), width - side)))
    y0 = int(round(min(max(cy - side / 2, 0), height - side)))
    return Box(x0, y0, x0 + side, y0 + side, label=box.label)


def cut_face(rgb, box: Box, *, margin: float = DEFAULT_MARGIN, size: int = DEFAULT_SIZE):
    """`(crop, square)`: the `size` x `size` RGB crop around `box` (pixels) and the square it came from."""
    import cv2

    h, w = rgb.shape[:2]
    sq = face_square(box, width=w, height=h, margin=margin)
    x0, y0, x1, y1 = (int(v) for v in sq.xyxy)
    crop = rgb[y0:y1, x0:x1]
    interp = cv2.INTER_AREA if (x1 - x0) > size else cv2.INTER_CUBIC
    return cv2.resize(crop, (size, size), interpolation=interp), sq
