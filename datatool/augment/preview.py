"""A contact sheet of a dataset with its boxes drawn: what a user looks at before training.

`preview_sheet(DATASET)` picks `n` images (reproducibly, by `seed`), draws each box with its
label and titles each cell with the image's name, marking negatives (`NEG`), unlabeled images
(`UNLAB`) and unreadable ones (`BAD`). With `recipe=`, each cell is instead a freshly computed
variant of a source (the same variant `datatool augment` would write with that recipe and
seed), so a recipe can be judged before an augmented folder exists.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import DatatoolError, ImageError, OutputExistsError

CELL = 256
TITLE_H = 18  # the title strip `draw.contact_sheet` puts above each cell


@dataclass(frozen=True)
class Preview:
    """What `write_preview` wrote: the grid file, its size in pixels and the cells' titles."""

    path: Path
    width: int
    height: int
    titles: tuple[str, ...]
    unreadable: tuple[str, ...] = ()
    rejected: tuple[str, ...] = ()  # labelme JSONs with errors, left out (skip_errors)


def _title(prefix: str, name: str) -> str:
    return f"{prefix} {name}" if prefix else name


def _fit(rgb, boxes, cell: int):
    """Shrink (never enlarge) an image to fit a cell before drawing, so lines and captions read the same
    in every cell whatever the image's size."""
    import cv2

    h, w = rgb.shape[:2]
    s = min(1.0, cell / max(h, w))
    if s >= 1.0:
        return rgb, tuple(boxes)
    small = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return small, tuple(b.scale(small.shape[1] / w, small.shape[0] / h) for b in boxes)


def _drawn(rgb, boxes, cell: int):
    from ..core.draw import draw_boxes

    rgb, boxes = _fit(rgb, boxes, cell)
    return draw_boxes(rgb, boxes, captions=[b.label for b in boxes])


def _placeholder(cell: int):
    import numpy as np

    img = np.full((cell, cell, 3), 60, np.uint8)
    img[:, :, 0] = 140  # dull red: nothing could be decoded
    return img


def preview_sheet(dataset: Path, *, n: int = 16, seed: int = 0, cell: int = CELL, recipe=None,
                  skip_errors: bool = False, rejected: list | None = None):
    """The contact sheet (RGB uint8 array), the cells' titles and the unreadable files (each
    `path: reason`).

    An image whose labelme JSON has an error is never drawn as if it had no face: it raises
    `RejectedImages`, unless `skip_errors` leaves it out (appended to `rejected`, if given).

    Without `recipe`: up to `n` images of the dataset, chosen by `seed`, sorted by key.
    With `recipe` (a name, path or `Recipe`): `n` variants of labeled images taken in an
    order shuffled by `seed` (each once before any repeats); cell i is variant i of its source,
    exactly as `augment_dataset(..., seed=seed)` would make it.
    """
    from ..dataset import load_dataset, refuse_rejected
    from ..core.draw import contact_sheet
    from ..core.images import load_rgb

    if n < 1:
        raise DatatoolError(f"--n must be at least 1, got {n}")
    ds = load_dataset(Path(dataset))
    left_out = refuse_rejected(ds, skip_errors=skip_errors)
    if rejected is not None:
        rejected.extend(str(p) for p in left_out)
    samples = sorted(ds.samples, key=lambda s: s.image_id)
    if not samples:
        raise DatatoolError(f"{dataset}: no images to preview")
    rng = random.Random(seed)
    images, titles, unreadable = [], [], []

    if recipe is None:
        picked = sorted(rng.sample(range(len(samples)), min(n, len(samples))))
        for i in picked:
            s = samples[i]
            name = Path(s.image_id).name
            try:
                rgb = load_rgb(s.image_path)
            except ImageError as e:  # named with its reason (`path: reason`), a bomb's included
                images.append(_placeholder(cell))
                titles.append(_title("BAD", name))
                unreadable.append(str(e))
                continue
            prefix = "UNLAB" if not s.labeled else ("NEG" if not s.boxes else "")
            images.append(_drawn(rgb, s.boxes, cell))
            titles.append(_title(prefix, name))
        return contact_sheet(images, titles=titles, cell=cell), tuple(titles), tuple(unreadable)

    from .recipes import Recipe, build_pipeline, load_recipe
    from .variants import augment_image, variant_seed
    from ..core.images import decode_rgb, sha256_bytes

    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    pipeline = build_pipeline(recipe)
    labeled = [s for s in samples if s.labeled]
    if not labeled:
        raise DatatoolError(f"{dataset}: no labeled images to augment for a preview")
    decoded: dict[int, tuple] = {}
    order = rng.sample(range(len(labeled)), len(labeled))  # each source once before any repeats
    for v in range(n):
        k = order[v % len(order)]
        s = labeled[k]
        name = Path(s.image_id).name
        if k not in decoded:
            try:
                data = Path(s.image_path).read_bytes()
                decoded[k] = (decode_rgb(data, name=str(s.image_path)), sha256_bytes(data))
            except ImageError as e:
                decoded[k] = (None, str(e))
            except OSError as e:
                decoded[k] = (None, f"{s.image_path}: cannot read image ({e.strerror or e})")
        rgb, sha = decoded[k]
        if rgb is None:
            images.append(_placeholder(cell))
            titles.append(_title("BAD", name))
            unreadable.append(sha)  # the error message, for an unreadable source
            continue
        var = augment_image(rgb, s.boxes, pipeline=pipeline, on_empty=recipe.on_empty,
                            max_redraws=recipe.max_redraws,
                            seed=variant_seed(recipe_sha256=recipe.sha256, image_sha256=sha, variant=v, seed=seed))
        prefix = {"negative": "NEG", "dropped": "DROP"}.get(var.status, "NEG" if not var.boxes else "")
        images.append(_drawn(var.rgb, var.boxes, cell))
        titles.append(_title(prefix, f"{Path(name).stem} #{v}"))
    return contact_sheet(images, titles=titles, cell=cell), tuple(titles), tuple(sorted(set(unreadable)))


def write_preview(dataset: Path, grid: Path, *, n: int = 16, seed: int = 0, cell: int = CELL, recipe=None,
                  overwrite: bool = False, skip_errors: bool = False) -> Preview:
    """Write the contact sheet of `preview_sheet` to `grid` (PNG or JPEG by extension), atomically."""
    from ..core.draw import save_rgb

    grid = Path(grid)
    if grid.exists() and not overwrite:
        raise OutputExistsError(f"{grid}: already exists (use --overwrite to replace it)")
    if grid.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise DatatoolError(f"{grid}: --grid must end in .png or .jpg")
    rejected: list[str] = []
    sheet, titles, unreadable = preview_sheet(dataset, n=n, seed=seed, cell=cell, recipe=recipe,
                                              skip_errors=skip_errors, rejected=rejected)
    save_rgb(grid, sheet)
    return Preview(grid, int(sheet.shape[1]), int(sheet.shape[0]), titles, unreadable, tuple(rejected))
