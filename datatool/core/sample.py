"""The core annotation types: `Box` and `Sample`.

Boxes are floats in pixels of the image *as displayed* (EXIF orientation applied),
continuous coordinates: a box covering pixel columns 10..19 is x_min=10, x_max=20.
Conversions to other conventions (labelme points, WIDER x/y/w/h, VOC 1-based integers,
normalized TFRecord floats) happen only in the format modules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixels: `(x_min, y_min, x_max, y_max)`, x_min <= x_max, y_min <= y_max.

    Zero-area boxes are representable (WIDER FACE has them) so validation can report them;
    readers reorder corners, so an inverted box never reaches this type.
    """

    x_min: float
    y_min: float
    x_max: float
    y_max: float
    label: str = "face"
    attributes: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=True)

    def __post_init__(self) -> None:
        coords = (self.x_min, self.y_min, self.x_max, self.y_max)
        if not all(isinstance(c, (int, float)) and math.isfinite(c) for c in coords):
            raise ValueError(f"Box coordinates must be finite numbers, got {coords}")
        if self.x_min > self.x_max or self.y_min > self.y_max:
            raise ValueError(
                f"Box expects x_min <= x_max and y_min <= y_max (pixels), got {coords}; "
                "use Box.from_corners() for points in any order"
            )
        for name in ("x_min", "y_min", "x_max", "y_max"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @classmethod
    def from_corners(cls, x1: float, y1: float, x2: float, y2: float, **kw) -> "Box":
        """A box from two opposite corners given in any order (as labelme rectangles are)."""
        return cls(min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2), **kw)

    @classmethod
    def from_xywh(cls, x: float, y: float, w: float, h: float, **kw) -> "Box":
        """A box from top-left corner and size (WIDER FACE, COCO)."""
        return cls(x, y, x + w, y + h, **kw)

    @property
    def width(self) -> float:
        return self.x_max - self.x_min

    @property
    def height(self) -> float:
        return self.y_max - self.y_min

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return (self.x_min, self.y_min, self.x_max, self.y_max)

    def clip(self, width: float, height: float) -> "Box":
        """The part of the box inside a `width` x `height` image (may become zero-area)."""
        x0 = min(max(self.x_min, 0.0), width)
        y0 = min(max(self.y_min, 0.0), height)
        x1 = min(max(self.x_max, 0.0), width)
        y1 = min(max(self.y_max, 0.0), height)
        return replace(self, x_min=x0, y_min=y0, x_max=x1, y_max=y1)

    def is_inside(self, width: float, height: float, tol: float = 1e-6) -> bool:
        return (
            self.x_min >= -tol and self.y_min >= -tol
            and self.x_max <= width + tol and self.y_max <= height + tol
        )

    def scale(self, sx: float, sy: float) -> "Box":
        return replace(self, x_min=self.x_min * sx, x_max=self.x_max * sx,
                       y_min=self.y_min * sy, y_max=self.y_max * sy)

    def iou(self, other: "Box") -> float:
        ix = max(0.0, min(self.x_max, other.x_max) - max(self.x_min, other.x_min))
        iy = max(0.0, min(self.y_max, other.y_max) - max(self.y_min, other.y_min))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class Sample:
    """One image and its annotations.

    - `image_id`: unique per image in a dataset: its path relative to `images/`, POSIX style.
      TFRecords write it as `image/source_id`; `source_id` is an alias.
    - `group`: sha256 of the original image's bytes this sample derives from (augmented
      variants share their original's group), so splits keep them together. "" = unknown.
    - `labeled`: False for an image with no annotation file (excluded from splits);
      a labeled sample with no boxes is a *negative* (no face).
    - `attributes`: free-form, e.g. {"session": "...", "person": "alice"}.
    """

    image_path: Path
    width: int
    height: int
    boxes: tuple[Box, ...] = ()
    image_id: str = ""
    group: str = ""
    labeled: bool = True
    annotation_path: Path | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=True)

    def __post_init__(self) -> None:
        if not isinstance(self.image_path, Path):  # re-wrapping a Path re-parses it: measurable per image
            object.__setattr__(self, "image_path", Path(self.image_path))
        object.__setattr__(self, "boxes", tuple(self.boxes))
        if not (isinstance(self.width, int) and isinstance(self.height, int)) or self.width <= 0 or self.height <= 0:
            raise ValueError(f"Sample expects positive integer width/height in pixels, got {self.width}x{self.height}")
        if not self.image_id:
            object.__setattr__(self, "image_id", self.image_path.name)

    @property
    def source_id(self) -> str:
        return self.image_id

    @property
    def is_negative(self) -> bool:
        return self.labeled and not self.boxes

    def replace(self, **changes) -> "Sample":
        return replace(self, **changes)
