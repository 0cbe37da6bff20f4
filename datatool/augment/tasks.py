"""The per-source functions of augment: one source in, every file it makes (bytes), manifest rows and counts out.

- `augment_labelled_image(ImageSource)`: an image with its labelme annotation -> the original
  (bytes as they are, JSON with its group) and its variants, each a JPEG and a labelme JSON.
- `augment_person_crop(PersonSource)`: a face crop `people/NAME/<file>` -> the original and its
  variants, JPEGs only: the group, session and person travel in a JPEG comment, since a crop
  has no JSON (an image with no JSON is unlabeled; an empty one would say "no face").

Both are pure: the result depends only on their arguments (the source's bytes, not its path, fix
every variant's seed), they touch no file and keep no state. Their inputs and results are plain,
picklable values, so any runner can call them: the local process pool (`run.py`) does, and so
can a Beam `DoFn`. The one argument that is not plain data is `pipeline`, which a worker builds
once from the recipe (`build_pipeline`); each variant resets its random state from the variant's
seed, so nothing carries from one call to the next. A runner with a spare thread may also pass an
`encoder` (a `concurrent.futures.Executor`): the JPEG encoding of each variant then runs there
while the next variant is drawn (OpenCV's encoder leaves the GIL), with the same bytes as without.

A runner writes each `Output`'s JSON (when there is one) before its image, so an interrupted
run never leaves an image that looks finished without its annotation.
"""

from __future__ import annotations

import posixpath
from collections import Counter, deque
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from ..core.errors import ImageError
from ..core.sample import Box, Sample
from .variants import Variant, augment_image, variant_seed

MANIFEST_COLUMNS = ("output", "source", "variant", "seed", "recipe_hash", "boxes_in", "boxes_out")
PERSON_STAMP_KEYS = ("group", "session", "person")  # what a crop's variants inherit from its JPEG comment
PERSON_MAX_REDRAWS = 10  # identity crops are never negatives: a lost face is always redrawn
ENCODES_IN_FLIGHT = 4  # variants handed to an `encoder` and not yet encoded: bounds the pixels held


def name_digits(factor: int) -> int:
    """Digits of the variant number in output names: 4, or more when --factor needs them."""
    return max(4, len(str(max(factor - 1, 0))))


def variant_rel(rel: str, variant: int, digits: int) -> str:
    """Where variant `variant` of the source copied to `rel` goes: `images/a/b.png` -> `images/a/b__aug0007.jpg`."""
    return f"{posixpath.splitext(rel)[0]}__aug{variant:0{digits}d}.jpg"


def json_rel(rel: str) -> str:
    """The labelme JSON beside an output image (`rel` ends in an image extension): same folder, same stem."""
    return posixpath.splitext(rel)[0] + ".json"


@dataclass(frozen=True)
class Settings:
    """What every source of one run shares (plain data)."""

    recipe_sha256: str
    seed: int = 0
    quality: int = 95
    on_empty: str = "redraw"
    max_redraws: int = 10
    digits: int = 4

    @classmethod
    def of(cls, recipe, *, factor: int, seed: int, quality: int) -> "Settings":
        """The settings of a run of `recipe` (a `Recipe`) with `--factor`, `--seed` and `--quality`."""
        return cls(recipe_sha256=recipe.sha256, seed=seed, quality=quality, on_empty=recipe.on_empty,
                   max_redraws=recipe.max_redraws, digits=name_digits(factor))


@dataclass(frozen=True)
class ImageSource:
    """A labelled image: its file's bytes and its annotation (boxes in displayed pixels).

    `rel`: `images/<key>`, where the original is copied and what the manifest names as source.
    `variants`: the variant indices to make (`range(factor)` on a fresh run). `original`: also
    emit the original. `name`: how errors name the source (its path); `rel` if empty.
    """

    rel: str
    data: bytes
    sample: Sample
    variants: tuple[int, ...]
    original: bool = True
    name: str = ""


@dataclass(frozen=True)
class PersonSource:
    """A face crop `people/NAME/<file>`: its bytes and the `facekit:` JPEG comment read from it
    (`provenance.capture_info`, or {} if none). Fields otherwise as in `ImageSource`."""

    rel: str
    data: bytes
    stamp: Mapping = field(default_factory=dict)
    variants: tuple[int, ...] = ()
    original: bool = True
    name: str = ""


@dataclass(frozen=True)
class Output:
    """One output image (path relative to DST, encoded bytes), its labelme JSON text (None for a
    person crop) and its manifest row."""

    rel: str
    image: bytes
    json_text: str | None
    row: Mapping


@dataclass(frozen=True)
class SourceResult:
    """Everything one source makes; `counts` add up into the run's summary."""

    outputs: tuple[Output, ...]
    counts: Mapping[str, int]


def manifest_row(output, source, variant="", seed="", recipe_hash="", boxes_in="", boxes_out="") -> dict:
    """A manifest.csv row; originals leave variant, seed and recipe hash empty, crops the box counts."""
    return dict(zip(MANIFEST_COLUMNS, (output, source, variant, seed, recipe_hash, boxes_in, boxes_out)))


def _decode(data: bytes, name: str):
    from ..core.images import decode_rgb

    return decode_rgb(data, name=name)


class _Jpegs:
    """JPEG-encodes a source's variants at once, or in `executor` when given (at most
    ENCODES_IN_FLIGHT waiting, so a large image with a large --factor holds a few frames, not all).
    `add` returns a slot; `bytes_of(slot)` its JPEG bytes, waiting for them if need be."""

    def __init__(self, quality: int, executor: Executor | None):
        self.quality, self.executor, self.waiting = quality, executor, deque()

    def add(self, rgb):
        from ..core.images import encode_jpeg

        if self.executor is None:
            return encode_jpeg(rgb, self.quality)
        while len(self.waiting) >= ENCODES_IN_FLIGHT:
            self.waiting.popleft().result()
        future = self.executor.submit(encode_jpeg, rgb, self.quality)
        self.waiting.append(future)
        return future

    @staticmethod
    def bytes_of(slot) -> bytes:
        return slot.result() if isinstance(slot, Future) else slot


def _variants(rgb, boxes, sha: str, variants, *, settings: Settings, pipeline, on_empty: str,
              max_redraws: int):
    """(index, seed, Variant) for each requested variant of one decoded source."""
    for v in variants:
        seed = variant_seed(recipe_sha256=settings.recipe_sha256, image_sha256=sha, variant=v, seed=settings.seed)
        yield v, seed, augment_image(rgb, boxes, pipeline=pipeline, seed=seed, on_empty=on_empty,
                                     max_redraws=max_redraws)


def _tally(counts: Counter, var: Variant) -> bool:
    """Count a variant's redraws (and a drop); False if it was dropped (nothing to write)."""
    counts["redraws"] += var.redraws
    if var.status == "dropped":
        counts["dropped"] += 1
        return False
    counts["variants"] += 1
    return True


def augment_labelled_image(source: ImageSource, *, settings: Settings, pipeline,
                           encoder: Executor | None = None) -> SourceResult:
    """The original (if asked) and the requested variants of a labelled image, each with its labelme JSON.

    Each JSON carries the source's group (its `facekit.group`, else the sha256 of its bytes), so
    `split` keeps variants with their original, and `facekit.augment` (source, variant, seed,
    redraws). Raises `ImageError` naming the source if it cannot be decoded or its size is not
    the one its JSON states; nothing is made then.
    """
    from ..core.images import sha256_bytes
    from ..formats.labelme import dumps_labelme

    sample, name = source.sample, source.name or source.rel
    sha = sha256_bytes(source.data)
    group = sample.group or sha
    n_in = len(sample.boxes)
    counts = Counter(sources=1, negative_sources=int(not sample.boxes))
    outputs = []
    if not (source.variants or source.original):
        return SourceResult((), dict(counts))
    jpegs = _Jpegs(settings.quality, encoder)
    rgb = _decode(source.data, name)  # decoded and checked before anything is made
    if (rgb.shape[1], rgb.shape[0]) != (sample.width, sample.height):
        raise ImageError(f"{name}: image is {rgb.shape[1]}x{rgb.shape[0]} but its JSON says "
                         f"imageWidth/imageHeight {sample.width}x{sample.height} (run `datatool validate`)")
    if source.original:  # byte for byte: EXIF and all
        jp = Path(json_rel(source.rel))
        copy = sample.replace(image_path=Path(source.rel), image_id=source.rel, group=group, annotation_path=jp)
        outputs.append(Output(source.rel, source.data, dumps_labelme(copy, jp),
                              manifest_row(source.rel, source.rel, boxes_in=n_in, boxes_out=n_in)))
        counts["originals"] += 1
    made = []  # (rel, JPEG slot, labelme JSON, manifest row) per variant
    for v, seed, var in _variants(rgb, sample.boxes, sha, source.variants, settings=settings, pipeline=pipeline,
                                  on_empty=settings.on_empty, max_redraws=settings.max_redraws):
        if not _tally(counts, var):
            continue
        counts["negatives_made"] += var.status == "negative"
        rel = variant_rel(source.rel, v, settings.digits)
        jp = Path(json_rel(rel))
        attributes = {**sample.attributes,
                      "augment": {"source": source.rel, "variant": v, "seed": seed, "redraws": var.redraws}}
        annotation = Sample(image_path=Path(rel), width=int(var.rgb.shape[1]), height=int(var.rgb.shape[0]),
                            boxes=var.boxes, image_id=rel, group=group, annotation_path=jp, attributes=attributes)
        made.append((rel, jpegs.add(var.rgb), dumps_labelme(annotation, jp),
                     manifest_row(rel, source.rel, v, seed, settings.recipe_sha256, n_in, len(var.boxes))))
    outputs += [Output(rel, jpegs.bytes_of(slot), text, row) for rel, slot, text, row in made]
    return SourceResult(tuple(outputs), dict(counts))


def augment_person_crop(source: PersonSource, *, settings: Settings, pipeline,
                        encoder: Executor | None = None) -> SourceResult:
    """The original (if asked) and the requested variants of a face crop, as JPEGs without JSON.

    One full-frame box keeps the recipe's box-safe crops from cutting the face; a variant whose
    face was lost anyway is redrawn. Each variant's JPEG comment carries the crop's session and
    person and its group (the crop's own, else the sha256 of its bytes), plus `augment`
    (source, variant). Raises `ImageError` naming the source if it cannot be decoded.
    """
    from ..core.images import sha256_bytes
    from ..core.provenance import stamp_jpeg

    name = source.name or source.rel
    sha = sha256_bytes(source.data)
    stamp = {k: source.stamp[k] for k in PERSON_STAMP_KEYS if source.stamp.get(k)}
    group = stamp.get("group") or sha
    counts = Counter(sources=1, people_sources=1)
    outputs = []
    if not (source.variants or source.original):
        return SourceResult((), dict(counts))
    jpegs = _Jpegs(settings.quality, encoder)
    rgb = _decode(source.data, name)
    if source.original:
        outputs.append(Output(source.rel, source.data, None, manifest_row(source.rel, source.rel)))
        counts["originals"] += 1
    face = (Box(0, 0, rgb.shape[1], rgb.shape[0]),)
    made = []  # (rel, JPEG slot, comment, manifest row) per variant
    for v, seed, var in _variants(rgb, face, sha, source.variants, settings=settings, pipeline=pipeline,
                                  on_empty="redraw", max_redraws=PERSON_MAX_REDRAWS):
        if not _tally(counts, var):
            continue
        rel = variant_rel(source.rel, v, settings.digits)
        comment = {**stamp, "group": group, "augment": {"source": source.rel, "variant": v}}
        made.append((rel, jpegs.add(var.rgb), comment, manifest_row(rel, source.rel, v, seed, settings.recipe_sha256)))
    outputs += [Output(rel, stamp_jpeg(jpegs.bytes_of(slot), comment), None, row) for rel, slot, comment, row in made]
    return SourceResult(tuple(outputs), dict(counts))
