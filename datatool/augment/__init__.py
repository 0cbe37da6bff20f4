"""Reproducible, box-aware augmentation, in parts:

- `recipes`: Albumentations `A.save` YAML recipes, loaded by name or path, checked, hashed;
  facekit's options under `facekit:`.
- `variants`: one variant, a pure function of (recipe, source image bytes, variant index, seed).
- `tasks`: the per-source functions any runner calls (a labelled image, a person crop): bytes in,
  every output's bytes, labelme JSON text and manifest row out.
- `run`: `augment_dataset`, the local runner: plan, --resume, a standard process pool, writes.
- `preview`: a contact sheet of a dataset, or of the variants a recipe would make of it
  (`datatool preview`), imported on its own: `from datatool.augment.preview import write_preview`.
"""

from .recipes import (ON_EMPTY, Recipe, build_pipeline, describe_recipe, list_recipes, load_recipe, recipe_path,
                      recipe_yaml, save_recipe)
from .run import AugmentSummary, augment_dataset, default_workers, read_manifest
from .tasks import (MANIFEST_COLUMNS, ImageSource, Output, PersonSource, Settings, SourceResult,
                    augment_labelled_image, augment_person_crop)
from .variants import Variant, augment_image, variant_seed

__all__ = [
    "Recipe", "Variant", "AugmentSummary", "list_recipes", "recipe_path", "load_recipe", "build_pipeline",
    "recipe_yaml", "save_recipe", "describe_recipe", "variant_seed", "augment_image", "augment_dataset",
    "read_manifest", "default_workers", "MANIFEST_COLUMNS", "ON_EMPTY",
    "Settings", "ImageSource", "PersonSource", "Output", "SourceResult", "augment_labelled_image",
    "augment_person_crop",
]
