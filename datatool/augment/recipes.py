"""Augmentation recipes: Albumentations `A.save` YAML files, loaded by name or path, checked, hashed.

Shipped recipes live in `datatool/recipes/*.yaml` (package data) and are chosen by name; any
other path works too. facekit's own options sit under a top-level `facekit:` key, which
`A.load` ignores:

    facekit:
      on_empty: redraw      # a variant whose faces were all cut out is drawn again ...
      max_redraws: 10       # ... at most this many times, then dropped (not written)
    # on_empty: negative    # ... or kept as a negative (a JSON with no shapes)

The recipe's `bbox_params` thresholds (`min_visibility`, `min_area`, ...) are honoured; the box
format and label fields are facekit's business (`pascal_voc` pixels, clipped to the image).

Loading never executes code from the file: the YAML is read with a `yaml.SafeLoader` (`core.safeyaml`:
aliases may not expand the document past a bound) and every
node must name a transform in Albumentations' own registry before `A.from_dict` builds it
(what `A.load` does, plus the checks and the `facekit:` block).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..core.errors import RecipeError
from ..core.safeyaml import load_yaml

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
ON_EMPTY = ("redraw", "negative")
FACEKIT_KEY = "facekit"
FACEKIT_DEFAULTS = {"description": "", "on_empty": "redraw", "max_redraws": 10}
# BboxParams fields a recipe may set; format/label_fields/clip are fixed by facekit.
BBOX_THRESHOLDS = ("min_area", "min_visibility", "min_width", "min_height", "max_accept_ratio",
                   "check_each_transform", "filter_invalid_bboxes")


@dataclass(frozen=True)
class Recipe:
    """A loaded, checked recipe. `sha256` covers the pipeline and facekit options (not the
    Albumentations version line nor the description), so reformatting a file keeps its hash.
    Plain data (picklable): a worker builds its pipeline from it with `build_pipeline`."""

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


def first_line(e: Exception) -> str:
    """An exception's message in one line (the first three non-empty lines, joined)."""
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


def _facekit_options(data: Mapping, path: Path) -> dict:
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
    return options


def load_recipe(name_or_path: str | Path = "default") -> Recipe:
    """Read and check a recipe (shipped name or YAML path); raises `RecipeError` naming file and field."""
    import yaml

    path = recipe_path(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"{path}: cannot read recipe ({e})") from e
    try:
        data = load_yaml(text, path=path, error=RecipeError)  # plain data only, aliases bounded
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise RecipeError(f"{path}: not valid YAML{where}: {problem}") from e
    if not isinstance(data, dict) or not isinstance(data.get("transform"), dict):
        raise RecipeError(f"{path}: transform: missing; expected an Albumentations A.save file "
                          "(a mapping with a top-level 'transform' key)")
    options = _facekit_options(data, path)
    transform = data["transform"]
    _check_transform_tree(transform, "transform", path)
    bp = transform.get("bbox_params")
    if bp is not None and not isinstance(bp, dict):
        raise RecipeError(f"{path}: transform.bbox_params: expected a mapping, got {type(bp).__name__}")
    pipeline = {"__version__": data.get("__version__"), "transform": transform}
    recipe = Recipe(name=path.stem if path.parent == RECIPES_DIR else str(path), path=path, text=text,
                    pipeline=pipeline, sha256=_canonical_hash(data), description=options["description"],
                    on_empty=options["on_empty"], max_redraws=options["max_redraws"])
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
            raise RecipeError(f"{recipe.path}: {where} ({name}): invalid parameters: {first_line(cause)}") from e
        raise RecipeError(f"{recipe.path}: transform: cannot build the pipeline: {first_line(e)}") from e


def recipe_yaml(compose, *, facekit: Mapping | None = None, header: str = "") -> str:
    """The text of a recipe file: `header` (comment lines), the `A.save` YAML of `compose`, then
    facekit's options as a top-level `facekit:` block (which `A.load` ignores)."""
    import albumentations as A
    import yaml

    buf = io.StringIO()
    A.save(compose, buf, data_format="yaml")
    block = yaml.safe_dump({FACEKIT_KEY: dict(facekit)}, default_flow_style=False, sort_keys=True,
                           width=1000) if facekit else ""
    return header + buf.getvalue() + block


def save_recipe(compose, path: Path, *, facekit: Mapping | None = None, header: str = "",
                overwrite: bool = False) -> Path:
    """Write `recipe_yaml(compose, ...)` to `path` atomically (refuses to replace without `overwrite`)."""
    from ..core.fsutil import write_text_atomic

    path = Path(path)
    write_text_atomic(path, recipe_yaml(compose, facekit=facekit, header=header), overwrite=overwrite)
    return path


def describe_recipe(recipe: Recipe) -> str:
    """One line: the transforms' names in order, e.g. `BBoxSafeRandomCrop, HorizontalFlip, ...`."""
    def names(node):
        if "transforms" in node:
            inner = ", ".join(names(c) for c in node["transforms"])
            return inner if node is recipe.pipeline["transform"] else f"{node['__class_fullname__'].split('.')[-1]}({inner})"
        return node["__class_fullname__"].split(".")[-1]
    return names(recipe.pipeline["transform"])
