"""Backbones, their input scaling (`preprocess_layers`) and their starting weights: ImageNet
(Keras' download and cache), none, or a local file.

No silent fallback: when ImageNet weights cannot be fetched the fit stops and says what to do.
"""

from __future__ import annotations

from pathlib import Path

from datatool.core.errors import DatatoolError

BACKBONES = ("mobilenetv2", "vgg16")


class WeightsError(DatatoolError):
    """Backbone weights that cannot be downloaded or loaded."""


def imagenet_filename(backbone: str, *, image_size: int, alpha: float) -> str:
    """The file Keras downloads into `~/.keras/models/` for an ImageNet backbone without its top."""
    if backbone == "vgg16":
        return "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    rows = image_size if image_size in (96, 128, 160, 192, 224) else 224
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha_str(alpha)}_{rows}_no_top.h5"


def alpha_str(alpha: float) -> str:
    # Keras names the files 1.0, 0.35, 1.3 ...: one decimal at least
    s = f"{float(alpha):g}"
    return s if "." in s else s + ".0"


def _application(backbone: str, *, image_size: int, alpha: float, weights):
    import keras

    shape = (image_size, image_size, 3)
    if backbone == "mobilenetv2":
        return keras.applications.MobileNetV2(input_shape=shape, alpha=alpha, include_top=False,
                                              weights=weights, name="backbone")
    if backbone == "vgg16":
        return keras.applications.VGG16(input_shape=shape, include_top=False, weights=weights, name="backbone")
    raise WeightsError(f"--backbone: unknown backbone {backbone!r} (expected one of {', '.join(BACKBONES)})")


def build_backbone(backbone: str, *, image_size: int, alpha: float = 1.0, weights: str = "imagenet"):
    """A Keras application without its top, named `backbone`, input `(image_size, image_size, 3)`
    already preprocessed the backbone's way. `weights`: 'imagenet', 'none' or a weights file path.
    """
    if backbone not in BACKBONES:
        raise WeightsError(f"--backbone: unknown backbone {backbone!r} (expected one of {', '.join(BACKBONES)})")
    if image_size < 32:
        raise WeightsError(f"--image-size: {image_size} is too small (at least 32 pixels)")
    key = str(weights).lower()
    if key == "none":
        return _application(backbone, image_size=image_size, alpha=alpha, weights=None)
    if key == "imagenet":
        try:
            return _application(backbone, image_size=image_size, alpha=alpha, weights="imagenet")
        except WeightsError:
            raise
        except Exception as e:  # keras.utils.get_file raises a bare Exception on a failed download
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            name = imagenet_filename(backbone, image_size=image_size, alpha=alpha)
            raise WeightsError(
                f"--weights imagenet: cannot get ImageNet weights for {backbone} ({reason}). "
                f"Without internet, copy the backbone's weights file ({name}) here and pass "
                f"--weights PATH/{name} (or put it in ~/.keras/models/), or train from scratch with "
                f"--weights none."
            ) from e
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(f"--weights: {path}: no such file (expected 'imagenet', 'none' or a .h5 / "
                           f".weights.h5 file of the {backbone} backbone without its top)")
    model = _application(backbone, image_size=image_size, alpha=alpha, weights=None)
    try:
        model.load_weights(str(path))
    except Exception as e:
        raise WeightsError(f"--weights: {path}: cannot load into {backbone} (alpha {alpha}, "
                           f"{image_size} px): {str(e).strip().splitlines()[0] if str(e).strip() else e!r}") from e
    return model


VGG_MEAN_BGR = (103.939, 116.779, 123.68)


def preprocess_layers(backbone: str):
    """Keras layers (builtin only, so the saved model needs no custom code) doing the backbone's
    `preprocess_input` on float 0-255 RGB."""
    import keras
    import numpy as np

    if backbone == "mobilenetv2":
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")
    if backbone == "vgg16":
        # a frozen 1x1 convolution: channel swap RGB -> BGR, then minus the ImageNet mean
        kernel = np.zeros((1, 1, 3, 3), np.float32)
        for out_c, in_c in enumerate((2, 1, 0)):
            kernel[0, 0, in_c, out_c] = 1.0
        bias = -np.asarray(VGG_MEAN_BGR, np.float32)
        return keras.layers.Conv2D(3, 1, name="preprocess", trainable=False,
                                   kernel_initializer=keras.initializers.Constant(kernel),
                                   bias_initializer=keras.initializers.Constant(bias))
    raise WeightsError(f"--backbone: unknown backbone {backbone!r} (expected one of {', '.join(BACKBONES)})")
