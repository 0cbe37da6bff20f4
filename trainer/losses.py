"""Losses and training-time metrics of the detector (Keras objects, registered so a saved model
reloads with them).

Box tensors are `(batch, 4)`, `[x_min, y_min, x_max, y_max]` normalized to [0, 1]; a target row
of -1s (`trainer.data.NO_BOX`) marks an image without a face and is masked out.
"""

from __future__ import annotations

import keras
from keras import ops


def _positive_mask(y_true):
    return ops.cast(y_true[:, 0] >= 0.0, "float32")


@keras.saving.register_keras_serializable(package="facekit")
def localization_loss(y_true, y_pred):
    """Seed 004's localization loss, per image: squared error of the top-left corner plus squared
    error of width and height. Zero for negatives; scaled so the batch mean Keras takes is the mean
    over the images that have a face.
    """
    y_true = ops.cast(y_true, y_pred.dtype)
    mask = _positive_mask(y_true)
    corner = ops.sum(ops.square(y_true[:, :2] - y_pred[:, :2]), axis=-1)
    w_true, h_true = y_true[:, 2] - y_true[:, 0], y_true[:, 3] - y_true[:, 1]
    w_pred, h_pred = y_pred[:, 2] - y_pred[:, 0], y_pred[:, 3] - y_pred[:, 1]
    size = ops.square(w_true - w_pred) + ops.square(h_true - h_pred)
    n = ops.cast(ops.shape(mask)[0], mask.dtype)
    return mask * (corner + size) * n / ops.maximum(ops.sum(mask), 1.0)


def ordered(b):
    """Boxes `(..., 4)` xyxy with their corners put in order (a regressor may swap them)."""
    return ops.concatenate([ops.minimum(b[..., :2], b[..., 2:]), ops.maximum(b[..., :2], b[..., 2:])], axis=-1)


def box_iou(a, b):
    """IoU of matching boxes of two `(..., 4)` xyxy tensors -> `(...)` (corners put in order first)."""
    a, b = ordered(a), ordered(b)
    wh = ops.maximum(ops.minimum(a[..., 2:], b[..., 2:]) - ops.maximum(a[..., :2], b[..., :2]), 0.0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / ops.maximum(area_a + area_b - inter, 1e-9)


@keras.saving.register_keras_serializable(package="facekit")
class MaskedIoU(keras.metrics.Metric):
    """Mean IoU between predicted and target box over the images that have a face. A subclass
    reads other targets by overriding `parts` (the dense head's `PositiveIoU`)."""

    def __init__(self, name="iou", **kwargs):
        super().__init__(name=name, **kwargs)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def parts(self, y_true, y_pred):
        """`(mask, true boxes, predicted boxes)`: one-box targets, -1 rows for negatives."""
        return _positive_mask(y_true), y_true, y_pred

    def update_state(self, y_true, y_pred, sample_weight=None):
        mask, true, pred = self.parts(ops.cast(y_true, "float32"), ops.cast(y_pred, "float32"))
        self.total.assign_add(ops.sum(box_iou(true, pred) * mask))
        self.count.assign_add(ops.sum(mask))

    def result(self):
        return self.total / ops.maximum(self.count, 1.0)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)
