"""The detector: `image (0-255 RGB) -> preprocess -> backbone -> head -> {presence, box}`.

Built from three named parts so they can be trained or replaced separately (a feature cache can
train `head` alone on stored `backbone` outputs):

- `preprocess`: the backbone's own input scaling as plain Keras layers, inside the saved model
  (MobileNetV2: `x / 127.5 - 1`; VGG16: RGB -> BGR and ImageNet mean subtracted, as
  `keras.applications.vgg16.preprocess_input` does), so users feed raw 0-255 RGB.
- `backbone`: a Keras application without its top (`trainer.weights`).
- `head`: a sub-model from the backbone's feature map to `presence` (sigmoid, 1) and `box`
  (4: `[x_min, y_min, x_max, y_max]` normalized to [0, 1], sigmoid). It keeps a coarse spatial
  map (1x1 conv + flatten) next to global pooling, since position is what a box regresses.
"""

from __future__ import annotations

import json
from pathlib import Path

from datatool.core.errors import DatatoolError

from .weights import build_backbone, preprocess_layers

# `--fine-tune-layers` default per backbone: Keras layers counted from the top of the backbone.
# MobileNetV2: the last inverted-residual block (block_16) and Conv_1; VGG16: block 5's convolutions.
DEFAULT_FINE_TUNE_LAYERS = {"mobilenetv2": 10, "vgg16": 4}


class ModelError(DatatoolError):
    """A run folder whose model cannot be loaded."""


def build_head(feature_shape, *, hidden: int = 256, spatial_channels: int = 32, dropout: float = 0.2):
    """`head`: backbone feature map `(h, w, c)` -> `{"presence": (1,), "box": (4,)}`."""
    import keras

    feats = keras.Input(tuple(feature_shape), name="features")
    pooled = keras.layers.GlobalAveragePooling2D(name="head_pool")(feats)
    spatial = keras.layers.Conv2D(spatial_channels, 1, activation="relu", name="head_reduce")(feats)
    spatial = keras.layers.Flatten(name="head_flatten")(spatial)
    x = keras.layers.Concatenate(name="head_concat")([pooled, spatial])
    x = keras.layers.Dense(hidden, activation="relu", name="head_dense")(x)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    presence = keras.layers.Dense(1, activation="sigmoid", name="head_presence")(x)
    box = keras.layers.Dense(4, activation="sigmoid", name="head_box")(x)
    return keras.Model(feats, {"presence": presence, "box": box}, name="head")


def assemble(backbone_model, head_model, *, backbone: str, image_size: int, bn_inference: bool = True):
    """The full detector from its parts. `bn_inference` calls the backbone with `training=False`
    (BatchNorm keeps its ImageNet statistics while fine-tuning); off when training from scratch."""
    import keras

    image = keras.Input((image_size, image_size, 3), name="image")
    x = preprocess_layers(backbone)(image)
    feats = backbone_model(x, training=False) if bn_inference else backbone_model(x)
    out = head_model(feats)
    presence = keras.layers.Identity(name="presence")(out["presence"])
    box = keras.layers.Identity(name="box")(out["box"])
    return keras.Model(image, {"presence": presence, "box": box}, name=f"facekit_{backbone}_detector")


def build_detector(*, backbone: str = "mobilenetv2", image_size: int = 224, alpha: float = 1.0,
                   weights: str = "imagenet", bn_inference: bool | None = None):
    """A new detector (see the module docstring). `bn_inference` defaults to True for pretrained
    weights and False for `weights='none'`."""
    if bn_inference is None:
        bn_inference = str(weights).lower() != "none"
    bb = build_backbone(backbone, image_size=image_size, alpha=alpha, weights=weights)
    head = build_head(bb.output.shape[1:])
    return assemble(bb, head, backbone=backbone, image_size=image_size, bn_inference=bn_inference)


def set_trainable(model, fine_tune_layers, *, freeze_batchnorm: bool = True) -> int:
    """Freeze the backbone except its top `fine_tune_layers` Keras layers (an int, or 'all');
    the head always trains. BatchNorm layers stay frozen when `freeze_batchnorm`.

    Returns the number of trainable backbone layers (with weights).
    """
    import keras

    bb = model.get_layer("backbone")
    layers = bb.layers
    if fine_tune_layers == "all":
        n = len(layers)
    else:
        n = max(0, min(int(fine_tune_layers), len(layers)))
    bb.trainable = n > 0
    for k, layer in enumerate(layers):
        on = k >= len(layers) - n
        if on and freeze_batchnorm and isinstance(layer, keras.layers.BatchNormalization):
            on = False
        layer.trainable = on
    model.get_layer("head").trainable = True
    return sum(1 for layer in layers if layer.trainable and layer.weights)


def save_model(model, path: Path) -> None:
    """`model.save` to a temporary `.keras` beside `path`, renamed when complete."""
    import os

    path = Path(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        model.save(str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_config(run: Path) -> dict:
    path = Path(run) / "config.json"
    if not path.is_file():
        raise ModelError(f"{run}: not a trainer run (no config.json; make one with `trainer fit`)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ModelError(f"{path}: not valid JSON ({e})") from e


def register_custom_objects() -> None:
    """Import the modules whose Keras classes a saved run may name (the dense head's decoding and
    NMS layers, the losses a compiled save refers to), so `load_model` finds them registered.
    They are facekit's own registered classes: loading never runs code from the model file."""
    from . import dense, losses  # noqa: F401


def load_run(run: Path, *, which: str = "model"):
    """`(keras model, config dict)` of a run folder; `which` is 'model' (final) or 'best'."""
    import keras

    register_custom_objects()

    run = Path(run)
    config = read_config(run)
    path = run / f"{which}.keras"
    if not path.is_file():
        raise ModelError(f"{run}: no {path.name} (the fit did not finish; `trainer fit ... --resume` continues it)")
    try:
        model = keras.models.load_model(str(path), compile=False)
    except Exception as e:
        raise ModelError(f"{path}: cannot load model ({str(e).strip().splitlines()[0] if str(e).strip() else e!r})") from e
    return model, config
