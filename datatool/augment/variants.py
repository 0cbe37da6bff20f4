"""One augmented variant: its seed, and the recipe's pipeline applied to pixels and boxes.

A variant is a pure function of (recipe, source image bytes, variant index, seed):
`variant_seed()` hashes those four into a 32-bit seed and the pipeline's random state is set
from it before each variant, so outputs are byte-identical whatever the number of workers or
the order they run in. (`A.load` does not restore a `Compose` seed, and seeding a `Compose`
once would make a variant depend on how many variants ran before it in the same process.)
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, replace
from typing import Any

from ..core.sample import Box

SEED_VERSION = "facekit-augment-v1"  # bump if the seed derivation changes (it changes every output)
BOX_DECIMALS = 3


def variant_seed(*, recipe_sha256: str, image_sha256: str, variant: int, seed: int) -> int:
    """The 32-bit seed of one variant: a hash of (recipe, source image bytes, variant index, --seed)."""
    key = f"{SEED_VERSION}\n{recipe_sha256}\n{image_sha256}\n{int(variant)}\n{int(seed)}"
    return int.from_bytes(hashlib.sha256(key.encode("ascii")).digest()[:4], "big")


@dataclass(frozen=True)
class Variant:
    """One augmented image (RGB uint8) and its boxes in its own pixels.

    `status`: "ok"; "negative" (every face was cut out and the recipe keeps such variants as
    negatives); "dropped" (every face was cut out on each of the 1 + max_redraws draws).
    """

    rgb: Any
    boxes: tuple[Box, ...]
    seed: int
    redraws: int = 0
    status: str = "ok"


def _out_boxes(result: dict, boxes: tuple[Box, ...]) -> tuple[Box, ...]:
    h, w = result["image"].shape[:2]
    out = []
    for xyxy, idx in zip(result["bboxes"], result["box_index"]):
        x0, y0, x1, y1 = (round(float(v), BOX_DECIMALS) for v in xyxy)
        x0, x1 = min(max(x0, 0.0), w), min(max(x1, 0.0), w)
        y0, y1 = min(max(y0, 0.0), h), min(max(y1, 0.0), h)
        if x1 - x0 < 1.0 or y1 - y0 < 1.0:  # a sliver left at an edge is not a face
            continue
        out.append(replace(boxes[int(idx)], x_min=x0, y_min=y0, x_max=x1, y_max=y1))
    return tuple(out)


def augment_image(rgb, boxes=(), *, pipeline, seed: int, on_empty: str = "redraw",
                  max_redraws: int = 10) -> Variant:
    """Apply `pipeline` (from `build_pipeline`) to an RGB image with pixel `Box`es, seeded by `seed`.

    Pure: the same inputs give the same output in any process (the pipeline's random state is
    set from `seed` first, so nothing carries over from an earlier call). A source with boxes
    whose faces are all cut out is redrawn (`on_empty="redraw"`, at most `max_redraws` times,
    then "dropped") or kept as a negative (`on_empty="negative"`). A negative source stays negative.
    """
    import numpy as np

    boxes = tuple(boxes)
    pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))
    bboxes = np.array([b.xyxy for b in boxes], dtype=np.float64).reshape(-1, 4)
    index = list(range(len(boxes)))
    redraws = 0
    while True:
        result = pipeline(image=rgb, bboxes=bboxes, box_index=index)
        kept = _out_boxes(result, boxes)
        if kept or not boxes:
            return Variant(result["image"], kept, seed, redraws, "ok")
        if on_empty == "negative":
            return Variant(result["image"], (), seed, redraws, "negative")
        if redraws >= max_redraws:
            return Variant(result["image"], (), seed, redraws, "dropped")
        redraws += 1
