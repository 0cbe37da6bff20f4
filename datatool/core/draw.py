"""Boxes on images and contact sheets (shared by preview, inspect and trainer predict)."""

from __future__ import annotations

from typing import Sequence

PALETTE = [(0, 200, 83), (41, 121, 255), (255, 145, 0), (213, 0, 249), (0, 184, 212), (255, 23, 68)]


def draw_boxes(rgb, boxes: Sequence, *, captions: Sequence[str] | None = None, thickness: int | None = None,
               color: tuple[int, int, int] | None = None):
    """A copy of an RGB uint8 image with pixel boxes `(x_min, y_min, x_max, y_max)` or `Box`es drawn.

    `captions[i]` is written above box i (e.g. `face 0.93`).
    """
    import cv2
    import numpy as np

    img = np.ascontiguousarray(rgb).copy()
    h, w = img.shape[:2]
    t = thickness or max(1, round(min(h, w) / 200))
    for k, box in enumerate(boxes):
        x0, y0, x1, y1 = box.xyxy if hasattr(box, "xyxy") else box
        c = color or PALETTE[k % len(PALETTE)]
        p0, p1 = (int(round(x0)), int(round(y0))), (int(round(x1)) - 1, int(round(y1)) - 1)
        cv2.rectangle(img, p0, p1, c, t, cv2.LINE_AA)
        text = captions[k] if captions and k < len(captions) else None
        if text:
            scale = max(0.35, min(h, w) / 600)
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
            ty = max(p0[1], th + base + 2)
            cv2.rectangle(img, (p0[0], ty - th - base - 2), (p0[0] + tw + 4, ty), c, -1)
            cv2.putText(img, text, (p0[0] + 2, ty - base - 1), cv2.FONT_HERSHEY_SIMPLEX, scale,
                        (255, 255, 255), 1, cv2.LINE_AA)
    return img


def contact_sheet(images: Sequence, *, titles: Sequence[str] | None = None, cell: int = 256,
                  cols: int | None = None, background: int = 32):
    """Tile RGB images into one RGB image: each fitted (aspect kept) into a `cell` x `cell` square."""
    import math

    import cv2
    import numpy as np

    n = len(images)
    if n == 0:
        return np.full((cell, cell, 3), background, np.uint8)
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    title_h = 18 if titles else 0
    sheet = np.full((rows * (cell + title_h), cols * cell, 3), background, np.uint8)
    for k, img in enumerate(images):
        r, c = divmod(k, cols)
        h, w = img.shape[:2]
        s = cell / max(h, w)
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        y0 = r * (cell + title_h) + title_h + (cell - nh) // 2
        x0 = c * cell + (cell - nw) // 2
        sheet[y0:y0 + nh, x0:x0 + nw] = small
        if titles and k < len(titles):
            cv2.putText(sheet, str(titles[k])[:40], (c * cell + 3, r * (cell + title_h) + 13),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.4, (230, 230, 230), 1, cv2.LINE_AA)
    return sheet


def save_rgb(path, rgb, *, quality: int = 92) -> None:
    """Write an RGB image (PNG or JPEG by extension) atomically."""
    from pathlib import Path

    import cv2

    from .errors import DatatoolError
    from .fsutil import write_bytes_atomic

    path = Path(path)
    ext = path.suffix.lower() or ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, rgb[:, :, ::-1], params)
    if not ok:
        raise DatatoolError(f"{path}: cannot encode image as {ext}")
    write_bytes_atomic(path, buf.tobytes())
