"""Reproducible, bbox-aware augmentation: recipes, per-variant seeds, a process pool.

An augmented variant is a pure function of (recipe, source image bytes, variant index, seed):
`variant_seed()` hashes those four into a 32-bit seed and the pipeline's random state is set
from it before each variant, so outputs are byte-identical whatever the number of workers or
the order they run in. (`A.load` does not restore a `Compose` seed, and seeding a `Compose`
once would make a variant depend on how many variants ran before it in the same process.)

Recipes are Albumentations `A.save` YAML files. Shipped ones live in `datatool/recipes/` and
are chosen by name; any other path works too. facekit's own options sit under a top-level
`facekit:` key, which `A.load` ignores:

    facekit:
      on_empty: redraw      # a variant whose faces were all cut out is drawn again ...
      max_redraws: 10       # ... at most this many times, then dropped (not written)
    # on_empty: negative    # ... or kept as a negative (a JSON with no shapes)

The recipe's `bbox_params` thresholds (`min_visibility`, `min_area`, ...) are honoured; the box
format and label fields are facekit's business (`pascal_voc` pixels, clipped to the image).

Output layout of `augment_dataset(SRC, out=DST)`:

    DST/images/<key stem>__aug0007.jpg (+ .json)   variants, labelme JSON written last
    DST/images/<key>              (+ .json)        originals, copied byte for byte
    DST/people/NAME/<stem>__aug0007.jpg            variants of identity crops (no JSON; their
                                                   group is stamped in a JPEG comment)
    DST/manifest.csv                               one row per output, sorted by output
    DST/dataset.json                               what made the folder
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from .core.errors import DatatoolError, ImageError, OutputExistsError, RecipeError
from .core.sample import Box, Sample

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
ON_EMPTY = ("redraw", "negative")
FACEKIT_KEY = "facekit"
FACEKIT_DEFAULTS = {"description": "", "on_empty": "redraw", "max_redraws": 10}
# BboxParams fields a recipe may set; format/label_fields/clip are fixed by facekit.
BBOX_THRESHOLDS = ("min_area", "min_visibility", "min_width", "min_height", "max_accept_ratio",
                   "check_each_transform", "filter_invalid_bboxes")
MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ("output", "source", "variant", "seed", "recipe_hash", "boxes_in", "boxes_out")
SEED_VERSION = "facekit-augment-v1"  # bump if the seed derivation changes (it changes every output)
BOX_DECIMALS = 3


# --------------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Recipe:
    """A loaded, checked recipe. `sha256` covers the pipeline and facekit options (not the
    Albumentations version line nor the description), so reformatting a file keeps its hash."""

    name: str
    path: Path
    text: str
    pipeline: Mapping[str, Any]  # the A.save dict: {"__version__": ..., "transform": {...}}
    sha256: str
    description: str = ""
    on_empty: str = "redraw"
    max_redraws: int = 10

    @property
    def bbox_thresholds(self) -> dict:
        bp = self.pipeline["transform"].get("bbox_params") or {}
        return {k: bp[k] for k in BBOX_THRESHOLDS if k in bp}


def list_recipes() -> list[str]:
    """Names of the recipes shipped inside the package, sorted."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_path(name_or_path: str | Path) -> Path:
    """A shipped recipe's file for a bare name, else the path given (which must exist)."""
    text = str(name_or_path)
    looks_like_path = isinstance(name_or_path, Path) or "/" in text or os.sep in text or text.endswith((".yaml", ".yml"))
    if not looks_like_path:
        path = RECIPES_DIR / f"{text}.yaml"
        if path.is_file():
            return path
        if not Path(text).is_file():
            raise RecipeError(f"unknown recipe {text!r}: shipped recipes are {', '.join(list_recipes())}, "
                              "or give the path of an A.save YAML file")
    path = Path(text)
    if not path.exists():
        raise RecipeError(f"{path}: recipe file not found")
    if not path.is_file():
        raise RecipeError(f"{path}: recipe is not a file")
    return path


def _canonical_hash(data: Mapping) -> str:
    body = {k: v for k, v in data.items() if k != "__version__"}
    if isinstance(body.get(FACEKIT_KEY), dict):
        body[FACEKIT_KEY] = {k: v for k, v in body[FACEKIT_KEY].items() if k != "description"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_transform_tree(node, where: str, path: Path) -> None:
    """Every node names a transform Albumentations knows; nested lists are lists."""
    import difflib

    from albumentations.core.serialization import SERIALIZABLE_REGISTRY, shorten_class_name

    if not isinstance(node, dict):
        raise RecipeError(f"{path}: {where}: expected a mapping with __class_fullname__, got {type(node).__name__}")
    name = node.get("__class_fullname__")
    if not isinstance(name, str) or not name:
        raise RecipeError(f"{path}: {where}.__class_fullname__: missing (not an A.save transform)")
    short = shorten_class_name(name)
    if short not in SERIALIZABLE_REGISTRY:
        close = difflib.get_close_matches(short, list(SERIALIZABLE_REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise RecipeError(f"{path}: {where}.__class_fullname__: unknown transform {name!r}{hint}")
    if "transforms" in node:
        children = node["transforms"]
        if not isinstance(children, list):
            raise RecipeError(f"{path}: {where}.transforms: expected a list, got {type(children).__name__}")
        for i, child in enumerate(children):
            _check_transform_tree(child, f"{where}.transforms[{i}]", path)


def _first_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return "; ".join(lines[:3]) or type(e).__name__


def _find_bad_transform(node, where: str):
    """The first leaf transform that cannot be built, as (where, name, exception)."""
    import warnings

    import albumentations as A

    if "transforms" in node:
        for i, child in enumerate(node["transforms"]):
            found = _find_bad_transform(child, f"{where}.transforms[{i}]")
            if found:
                return found
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            A.from_dict({"transform": node})
    except Exception as e:  # pydantic ValidationError, TypeError, ValueError ...
        return where, node.get("__class_fullname__"), e
    return None


def load_recipe(name_or_path: str | Path = "default") -> Recipe:
    """Read and check a recipe (shipped name or YAML path); raises `RecipeError` naming file and field."""
    import yaml

    path = recipe_path(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"{path}: cannot read recipe ({e})") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise RecipeError(f"{path}: not valid YAML{where}: {problem}") from e
    if not isinstance(data, dict) or not isinstance(data.get("transform"), dict):
        raise RecipeError(f"{path}: transform: missing; expected an Albumentations A.save file "
                          "(a mapping with a top-level 'transform' key)")

    options = dict(FACEKIT_DEFAULTS)
    extra = data.get(FACEKIT_KEY)
    if extra is not None:
        if not isinstance(extra, dict):
            raise RecipeError(f"{path}: {FACEKIT_KEY}: expected a mapping, got {type(extra).__name__}")
        for k, v in extra.items():
            if k not in FACEKIT_DEFAULTS:
                raise RecipeError(f"{path}: {FACEKIT_KEY}.{k}: unknown option (known: {', '.join(FACEKIT_DEFAULTS)})")
            options[k] = v
    if options["on_empty"] not in ON_EMPTY:
        raise RecipeError(f"{path}: {FACEKIT_KEY}.on_empty: expected one of {', '.join(ON_EMPTY)}, "
                          f"got {options['on_empty']!r}")
    mr = options["max_redraws"]
    if not isinstance(mr, int) or isinstance(mr, bool) or mr < 0:
        raise RecipeError(f"{path}: {FACEKIT_KEY}.max_redraws: expected a non-negative integer, got {mr!r}")
    if not isinstance(options["description"], str):
        raise RecipeError(f"{path}: {FACEKIT_KEY}.description: expected text")

    transform = data["transform"]
    _check_transform_tree(transform, "transform", path)
    bp = transform.get("bbox_params")
    if bp is not None and not isinstance(bp, dict):
        raise RecipeError(f"{path}: transform.bbox_params: expected a mapping, got {type(bp).__name__}")
    pipeline = {"__version__": data.get("__version__"), "transform": transform}
    recipe = Recipe(name=path.stem if path.parent == RECIPES_DIR else str(path), path=path, text=text,
                    pipeline=pipeline, sha256=_canonical_hash(data), description=options["description"],
                    on_empty=options["on_empty"], max_redraws=mr)
    build_pipeline(recipe)  # every parameter checked now, not in a worker an hour later
    return recipe


def build_pipeline(recipe: Recipe):
    """The `A.Compose` for a recipe, taking boxes as pascal_voc pixels with a `box_index` label field."""
    import warnings

    import albumentations as A

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "no 'p' parameter, defaulting to 0.5"
            loaded = A.from_dict(dict(recipe.pipeline))
            transforms = list(loaded.transforms) if isinstance(loaded, A.Compose) else [loaded]
            p = float(getattr(loaded, "p", 1.0)) if isinstance(loaded, A.Compose) else 1.0
            bbox_params = A.BboxParams(format="pascal_voc", label_fields=["box_index"], clip=True,
                                       **recipe.bbox_thresholds)
            return A.Compose(transforms, bbox_params=bbox_params, p=p)
    except Exception as e:
        found = _find_bad_transform(recipe.pipeline["transform"], "transform")
        if found:
            where, name, cause = found
            raise RecipeError(f"{recipe.path}: {where} ({name}): invalid parameters: {_first_line(cause)}") from e
        raise RecipeError(f"{recipe.path}: transform: cannot build the pipeline: {_first_line(e)}") from e


# --------------------------------------------------------------------------------------------
# One variant
# --------------------------------------------------------------------------------------------

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

    Pure: the same inputs give the same output in any process. A source with boxes whose faces
    are all cut out is redrawn (`on_empty="redraw"`, at most `max_redraws` times, then
    "dropped") or kept as a negative (`on_empty="negative"`). A negative source stays negative.
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


# --------------------------------------------------------------------------------------------
# A whole dataset
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Task:
    """One source image and where its outputs go (paths relative to the roots)."""

    kind: str  # "images" | "people"
    src_path: Path
    src_rel: str  # as written in the manifest: images/<key> or people/NAME/<file>
    original_rel: str  # where the original is copied: images/<key> or people/NAME/<file>
    stem_rel: str  # variants: <stem_rel>__aug0007.jpg
    sample: Sample | None


@dataclass(frozen=True)
class _Options:
    out: Path
    factor: int
    seed: int
    keep_originals: bool
    resume: bool
    overwrite: bool
    quality: int
    recipe_sha256: str
    on_empty: str
    max_redraws: int
    digits: int


@dataclass
class AugmentSummary:
    """What `augment_dataset` did; `counts` goes into dataset.json."""

    out: Path
    recipe: str
    recipe_sha256: str
    counts: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    issues: list = field(default_factory=list)
    manifest: Path | None = None
    record: Path | None = None


_STATE: dict = {}


def _init_worker(recipe: Recipe, options: _Options, ignore_sigint: bool = True) -> None:
    import signal

    import cv2

    if ignore_sigint:  # the parent handles Ctrl-C: it stops handing out work and waits
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)
    _STATE["pipeline"] = build_pipeline(recipe)
    _STATE["options"] = options


def _decode(data: bytes, path: Path):
    import cv2
    import numpy as np

    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)  # applies EXIF orientation
    if bgr is None:
        raise ImageError(f"{path}: corrupt or unsupported image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _encode_jpeg(rgb, quality: int):
    """JPEG bytes as a 1-D uint8 array (bytes-like: written without another copy)."""
    import cv2

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ImageError("JPEG encoding failed")
    return buf


def _row(output, source, variant="", seed="", recipe_hash="", boxes_in="", boxes_out="") -> dict:
    return dict(zip(MANIFEST_COLUMNS, (output, source, variant, seed, recipe_hash, boxes_in, boxes_out)))


def _done_json(json_path: Path, image_path: Path) -> dict | None:
    """The JSON of a finished output (written last, so its presence marks completion), else None."""
    if not (json_path.is_file() and image_path.is_file()):
        return None
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # damaged: redo it
    return data if isinstance(data, dict) and isinstance(data.get("shapes"), list) else None


def _process(task: _Task) -> dict:
    """Write the outputs of one source image; returns manifest rows, counts and errors."""
    try:
        return _process_unsafe(task)
    except DatatoolError as e:
        error = str(e)
    except OSError as e:
        error = f"{e.filename or task.src_path}: {e.strerror or e}"
    except Exception as e:  # noqa: BLE001 - one odd image must not stop the other thousands
        error = f"{task.src_path}: augmentation failed ({type(e).__name__}: {_first_line(e)})"
    return {"rows": [], "counts": {"failed_sources": 1}, "errors": [error]}


def _resumed_row(task: _Task, rel: str, v: int, seed: int, n_in, opt: _Options, counts: Counter) -> dict | None:
    """The manifest row of a variant a previous run finished, or None if it must be made."""
    img_path = opt.out / rel
    if task.kind == "people":
        if not img_path.is_file():
            return None
        n_out = ""
    else:
        prev = _done_json(img_path.with_suffix(".json"), img_path)
        if prev is None:
            return None
        n_out = len(prev["shapes"])
        info = prev.get("facekit") if isinstance(prev.get("facekit"), dict) else {}
        info = info.get("augment") if isinstance(info.get("augment"), dict) else {}
        counts["redraws"] += info.get("redraws", 0) if isinstance(info.get("redraws"), int) else 0
        counts["negatives_made"] += bool(n_in and not n_out)
    counts["resumed"] += 1
    counts["variants"] += 1
    return _row(rel, task.src_rel, v, seed, opt.recipe_sha256, n_in, n_out)


def _process_unsafe(task: _Task) -> dict:
    from .formats.labelme import dumps_labelme
    from .core.fsutil import write_bytes_atomic, write_text_atomic
    from .core.images import sha256_bytes

    opt: _Options = _STATE["options"]
    pipeline = _STATE["pipeline"]
    counts: Counter = Counter()
    rows = []
    people = task.kind == "people"
    overwrite = opt.overwrite or opt.resume  # resume replaces only unfinished outputs

    try:
        data = task.src_path.read_bytes()
    except OSError as e:
        raise ImageError(f"{task.src_path}: cannot read image ({e.strerror or e})") from e
    sha = sha256_bytes(data)
    sample = task.sample
    stamp = {}
    if people:  # a crop's group/session travel in its JPEG comment (capture, crop); variants inherit it
        from .core.provenance import capture_info

        info = capture_info(task.src_path) or {}
        stamp = {k: info[k] for k in ("group", "session", "person") if info.get(k)}
    group = (sample.group if sample is not None else stamp.get("group", "")) or sha
    n_in = len(sample.boxes) if sample is not None else ""

    # what a previous run already finished (--resume), and what is left to make
    todo = []
    for v in range(opt.factor):
        seed = variant_seed(recipe_sha256=opt.recipe_sha256, image_sha256=sha, variant=v, seed=opt.seed)
        rel = f"{task.stem_rel}__aug{v:0{opt.digits}d}.jpg"
        row = _resumed_row(task, rel, v, seed, n_in, opt, counts) if opt.resume else None
        if row is not None:
            rows.append(row)
        else:
            todo.append((v, seed, rel))
    dst = opt.out / task.original_rel
    copy_original = opt.keep_originals and not (
        opt.resume and (dst.is_file() if people else _done_json(dst.with_suffix(".json"), dst) is not None))

    rgb = None
    if todo or copy_original:  # decode and check before writing anything for this source
        rgb = _decode(data, task.src_path)
        if sample is not None and (rgb.shape[1], rgb.shape[0]) != (sample.width, sample.height):
            raise ImageError(
                f"{task.src_path}: image is {rgb.shape[1]}x{rgb.shape[0]} but its JSON says "
                f"imageWidth/imageHeight {sample.width}x{sample.height} (run `datatool validate`)")

    counts["sources"] += 1
    if people:
        counts["people_sources"] += 1
    elif not sample.boxes:
        counts["negative_sources"] += 1
    if opt.keep_originals:
        if copy_original:
            write_bytes_atomic(dst, data, overwrite=overwrite)  # byte for byte: EXIF and all
            if not people:
                jp = dst.with_suffix(".json")
                out_sample = sample.replace(image_path=dst, image_id=task.original_rel, group=group,
                                            annotation_path=jp)
                write_text_atomic(jp, dumps_labelme(out_sample, jp), overwrite=overwrite)
        else:
            counts["resumed"] += 1
        counts["originals"] += 1
        rows.append(_row(task.original_rel, task.src_rel, boxes_in=n_in, boxes_out=n_in))

    if people:  # a face crop: one full-frame box keeps bbox-safe crops from cutting the face,
        # and identity crops are never negatives, so a lost face is always redrawn
        boxes, on_empty, max_redraws = (Box(0, 0, rgb.shape[1], rgb.shape[0]),) if todo else (), "redraw", 10
    else:
        boxes, on_empty, max_redraws = sample.boxes, opt.on_empty, opt.max_redraws
    for v, seed, rel in todo:
        var = augment_image(rgb, boxes, pipeline=pipeline, seed=seed, on_empty=on_empty, max_redraws=max_redraws)
        counts["redraws"] += var.redraws
        if var.status == "dropped":
            counts["dropped"] += 1
            continue
        img_path = opt.out / rel
        encoded = _encode_jpeg(var.rgb, opt.quality)
        if people:  # no JSON beside a crop: stamp the group so `split --task identity` keeps it with its original
            from .core.provenance import stamp_jpeg

            encoded = stamp_jpeg(encoded.tobytes(), {**stamp, "group": group, "augment": {"source": task.src_rel, "variant": v}})
        write_bytes_atomic(img_path, encoded, overwrite=overwrite)
        counts["variants"] += 1
        if people:
            rows.append(_row(rel, task.src_rel, v, seed, opt.recipe_sha256))
            continue
        counts["negatives_made"] += var.status == "negative"
        jp = img_path.with_suffix(".json")
        attributes = {**sample.attributes,
                      "augment": {"source": task.src_rel, "variant": v, "seed": seed, "redraws": var.redraws}}
        out_sample = Sample(image_path=img_path, width=int(var.rgb.shape[1]), height=int(var.rgb.shape[0]),
                            boxes=var.boxes, image_id=rel, group=group, annotation_path=jp, attributes=attributes)
        # the JSON is written last: its presence marks the variant as done (see --resume)
        write_text_atomic(jp, dumps_labelme(out_sample, jp), overwrite=overwrite)
        rows.append(_row(rel, task.src_rel, v, seed, opt.recipe_sha256, n_in, len(var.boxes)))
    return {"rows": rows, "counts": dict(counts), "errors": []}


def _plan(src: Path, *, keep_originals: bool, factor: int) -> tuple[list[_Task], Any]:
    from .dataset import list_people, load_dataset

    ds = load_dataset(src)
    tasks = []
    for s in ds.labeled:
        key = s.image_id
        stem = Path(key).with_suffix("").as_posix()
        tasks.append(_Task("images", Path(s.image_path), f"images/{key}", f"images/{key}", f"images/{stem}", s))
    people_root = Path(src) / "people"
    for name, files in list_people(src).items():
        for f in files:
            rel = f.relative_to(people_root).as_posix()
            stem = Path(rel).with_suffix("").as_posix()
            tasks.append(_Task("people", f, f"people/{rel}", f"people/{rel}", f"people/{stem}", None))
    # two sources must never write the same output (a.jpg and a.png share the stem "a"; a source
    # named a__aug0001.jpg would meet variant 1 of a.jpg)
    digits = max(4, len(str(max(factor - 1, 0))))
    owner: dict[str, str] = {}
    for t in tasks:
        outs = [t.original_rel] if keep_originals else []
        outs += [f"{t.stem_rel}__aug{v:0{digits}d}.jpg" for v in range(factor)]
        for o in outs:
            k = o.lower()  # case-insensitive file systems (macOS, Windows)
            if owner.setdefault(k, t.src_rel) != t.src_rel:
                raise DatatoolError(f"{t.src_path}: its output {o} would also be written for {owner[k]} "
                                    "(rename one of them)")
    return tasks, ds


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def augment_dataset(src: Path, *, out: Path, recipe: str | Path | Recipe = "default", factor: int = 30,
                    seed: int = 0, workers: int | None = None, keep_originals: bool = True,
                    overwrite: bool = False, resume: bool = False, quality: int = 95,
                    progress: bool = False, command: str = "datatool augment") -> AugmentSummary:
    """Write `factor` augmented variants of every labeled image (and people crop) of `src` into `out`.

    Byte-identical outputs for any `workers`; `resume` finishes only what is missing (the JSON of a
    variant is written last and marks it done); a non-empty `out` is refused without `overwrite`
    or `resume`. Unlabeled images are skipped; unreadable sources are reported in `errors`.
    """
    from .core.fsutil import prepare_output_dir, read_record, write_record

    src, out = Path(src), Path(out)
    if factor < 0:
        raise DatatoolError(f"--factor must be 0 or more, got {factor}")
    if not 1 <= quality <= 100:
        raise DatatoolError(f"--quality must be between 1 and 100, got {quality}")
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    if not src.is_dir():
        raise DatatoolError(f"{src}: dataset folder not found")
    s_res, o_res = src.resolve(), out.resolve()
    if o_res == s_res or s_res in o_res.parents:
        raise DatatoolError(f"{out}: the output folder must not be inside the source dataset {src}")
    if o_res in s_res.parents:
        raise DatatoolError(f"{out}: the output folder must not contain the source dataset {src}")

    tasks, ds = _plan(src, keep_originals=keep_originals, factor=factor)
    summary = AugmentSummary(out=out, recipe=recipe.name, recipe_sha256=recipe.sha256,
                             issues=[i for i in ds.issues if i.severity == "error"])
    summary.counts["unlabeled_skipped"] = len(ds.unlabeled)
    summary.counts["unreadable_skipped"] = len({i.file for i in summary.issues if i.code in ("bad-json", "bad-image")})
    if not tasks:
        raise DatatoolError(f"{src}: nothing to augment: no labeled images (image + labelme JSON) "
                            "and no people/NAME/*.jpg crops")

    settings = {"source": str(src), "recipe": {"name": recipe.name, "sha256": recipe.sha256,
                                                "path": str(recipe.path)},
                "seed": seed, "factor": factor, "keep_originals": keep_originals, "quality": quality}
    if resume and out.is_dir() and any(out.iterdir()):
        prev = read_record(out)
        if prev is None:
            raise DatatoolError(f"{out}: no dataset.json here, so this is not an unfinished augment output "
                                "(use --overwrite to write into it anyway)")
        before = {**prev, "recipe": (prev.get("recipe") or {}).get("sha256")}
        now = {**settings, "recipe": recipe.sha256}
        differs = [k for k in ("recipe", "seed", "factor", "keep_originals", "quality") if before.get(k) != now[k]]
        if differs:
            raise DatatoolError(f"{out}: was made with other settings ({', '.join(differs)} differ in "
                                f"{out / 'dataset.json'}); resume with the same options or use --overwrite")
    elif not (resume or overwrite) and out.is_dir() and (read_record(out) or {}).get("complete") is False:
        raise OutputExistsError(f"{out}: holds an unfinished augment run: add --resume to finish it "
                                "(or --overwrite to write into it anyway)")
    prepare_output_dir(out, overwrite=overwrite, resume=resume)
    for stale in out.rglob(".facekit-tmp-*"):  # left by a killed run (a finished file was never renamed over)
        stale.unlink(missing_ok=True)

    if workers is None:  # all cores, but a worker costs ~1 s to start: not worth it for a few hundred variants
        workers = min(default_workers(), 1 + len(tasks) * max(factor, 1) // 300)
    n_workers = max(1, min(workers, len(tasks)))
    parent = read_record(src)
    write_record(out, command=command, complete=False, workers=n_workers, **settings,
                 parents=[{"path": str(src), "record": parent}] if parent else [{"path": str(src)}])

    options = _Options(out=out, factor=factor, seed=seed, keep_originals=keep_originals, resume=resume,
                       overwrite=overwrite, quality=quality, recipe_sha256=recipe.sha256,
                       on_empty=recipe.on_empty, max_redraws=recipe.max_redraws,
                       digits=max(4, len(str(max(factor - 1, 0)))))
    rows: list[dict] = []
    try:
        for result in _run(tasks, recipe, options, n_workers, progress):
            rows.extend(result["rows"])
            summary.counts.update(result["counts"])
            summary.errors.extend(result["errors"])
    except KeyboardInterrupt:
        # Every process has stopped by now; a Ctrl-C landing between creating a temp file and
        # the code that removes it could still leave one behind: sweep them (DST is ours).
        for stale in out.rglob(".facekit-tmp-*"):
            stale.unlink(missing_ok=True)
        raise

    rows.sort(key=lambda r: r["output"])
    summary.manifest = _write_manifest(out / MANIFEST, rows)
    counts = {k: summary.counts.get(k, 0) for k in (
        "sources", "people_sources", "negative_sources", "originals", "variants", "negatives_made",
        "redraws", "dropped", "resumed", "failed_sources", "unlabeled_skipped", "unreadable_skipped")}
    summary.record = write_record(out, command=command, complete=not summary.errors, workers=n_workers,
                                  **settings, counts=counts, errors=summary.errors[:100],
                                  parents=[{"path": str(src), "record": parent}] if parent else [{"path": str(src)}])
    return summary


def _run(tasks, recipe: Recipe, options: _Options, n_workers: int, progress: bool):
    """Yield each task's result (in any order). This process always works on tasks itself; with
    n_workers > 1 it is joined by n_workers - 1 pool processes, so the seconds a fresh worker
    spends importing Albumentations are not seconds of idle cores."""
    import cv2
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), unit="img", desc="augment", disable=not progress, dynamic_ncols=True)
    threads = cv2.getNumThreads()
    _init_worker(recipe, options, ignore_sigint=False)
    try:
        if n_workers == 1:
            for t in tasks:
                result = _process(t)
                bar.update(1)
                yield result
        else:
            yield from _run_with_pool(tasks, recipe, options, n_workers - 1, bar)
    finally:
        cv2.setNumThreads(threads)
        _STATE.clear()
        bar.close()


def _run_with_pool(tasks, recipe, options, pool_size: int, bar):
    import collections
    import multiprocessing as mp
    import queue
    import threading
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    # forkserver: workers start from a fresh interpreter (safe even if the caller has loaded
    # TensorFlow or used OpenCV threads) that has already imported the heavy libraries.
    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["albumentations", "cv2", "datatool.augment"])
    pool = ProcessPoolExecutor(max_workers=pool_size, mp_context=ctx, initializer=_init_worker,
                               initargs=(recipe, options))
    todo = collections.deque(tasks)
    lock = threading.Lock()
    results: queue.SimpleQueue = queue.SimpleQueue()
    stop = threading.Event()

    def take():
        with lock:
            return todo.popleft() if todo else None

    def feed():  # keeps each pool process busy with one task; this process takes the rest
        import signal

        if hasattr(signal, "pthread_sigmask"):
            # The pool's processes (and the forkserver) are started from this thread and inherit its
            # signal mask: with SIGINT blocked, a Ctrl-C while they import Albumentations cannot kill
            # them with a traceback. The main thread still gets Ctrl-C and stops the run cleanly.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        inflight = set()
        try:
            while not stop.is_set():
                while len(inflight) < pool_size and (t := take()) is not None:
                    inflight.add(pool.submit(_process, t))
                if not inflight:
                    break
                done, inflight = wait(inflight, timeout=0.2, return_when=FIRST_COMPLETED)
                for f in done:
                    results.put(("result", f.result()))
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            results.put(("error", e))
        finally:
            results.put(("end", None))

    feeder = threading.Thread(target=feed, name="augment-feeder", daemon=True)
    feeder.start()
    ended = False

    def handle(kind, value):
        nonlocal ended
        if kind == "end":
            ended = True
            return None
        if kind == "error":
            if isinstance(value, BrokenProcessPool):
                raise DatatoolError("a worker process died (out of memory? try fewer --workers); "
                                    "finished outputs are kept: rerun with --resume") from value
            raise value
        bar.update(1)
        return value

    try:
        while (t := take()) is not None:
            result = _process(t)
            bar.update(1)
            yield result
            while True:
                try:
                    item = results.get_nowait()
                except queue.Empty:
                    break
                if (r := handle(*item)) is not None:
                    yield r
        while not ended:
            if (r := handle(*results.get())) is not None:
                yield r
    except BaseException:
        # Ctrl-C (or an error): hand out no more work; running tasks finish their atomic writes
        stop.set()
        with lock:
            todo.clear()
        feeder.join()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    feeder.join()
    pool.shutdown(wait=True)


def _write_manifest(path: Path, rows: list[dict]) -> Path:
    from .core.fsutil import write_text_atomic

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(path, buf.getvalue())
    return path


def read_manifest(path: Path) -> list[dict]:
    """The rows of a manifest.csv as dicts of strings."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def describe_recipe(recipe: Recipe) -> str:
    """One line: the transforms' names in order, e.g. `BBoxSafeRandomCrop, HorizontalFlip, ...`."""
    def names(node):
        if "transforms" in node:
            inner = ", ".join(names(c) for c in node["transforms"])
            return inner if node is recipe.pipeline["transform"] else f"{node['__class_fullname__'].split('.')[-1]}({inner})"
        return node["__class_fullname__"].split(".")[-1]
    return names(recipe.pipeline["transform"])


__all__ = [
    "Recipe", "Variant", "AugmentSummary", "list_recipes", "recipe_path", "load_recipe", "build_pipeline",
    "variant_seed", "augment_image", "augment_dataset", "read_manifest", "describe_recipe", "default_workers",
    "MANIFEST_COLUMNS", "ON_EMPTY",
]
