"""The dense (multi-face) detector: a face score and a box for every cell of two feature maps,
then non-maximum suppression.

    image (0-255 RGB) -> preprocess -> backbone -> head -> decode -> postprocess
                                      (s8, s16)   (N, 5)  cells     boxes (K, 4), scores (K,),
                                                          scores    presence (1,), box (4,)
                                                          boxes

Why this shape (the tutorials' one-box model regresses one box from pooled features, so it
cannot find a second face and places even one poorly; every real face detector - BlazeFace,
YuNet, SCRFD, RetinaFace, SSD - predicts densely):

- Two feature maps, stride 8 and stride 16, as BlazeFace and SSDLite do. MobileNetV2 is cut at
  stride 16 (`block_6_expand_relu`, `block_13_expand_relu`: the expanded activations that feed
  each stage's stride-2 depthwise convolution); its stride-32 part holds about a quarter of the
  network's multiply-adds and nearly three quarters of its weights (alpha 1.0, 224 px: 300 M
  multiply-adds and 2.26 M weights in all, 221 M and 0.62 M up to `block_13_expand_relu`), and a
  160-224 px input needs no 5-7 cell map to see a whole-image face.
  VGG16: `block4_conv3` and `block5_conv3`. Stride 8 gives 16 px faces two cells across; at
  stride 16 a 224 px image is 14 cells, so a whole-image face still has a centre cell. A light
  top-down path (the stride-16 map upsampled and added to the stride-8 one, as in FPN) gives the
  small-face level the deeper level's context.
- Anchor-free (FCOS / YuNet): per cell, one face logit and four distances (left, top, right,
  bottom) from the cell centre to the box sides, in cells (`exp` of the raw output, so always
  positive). Faces are nearly square, so anchor shapes would add hyper-parameters (sizes,
  ratios, IoU matching thresholds) for nothing; one prediction per cell keeps the output small
  (N = 980 cells at 224 px) and the decoding a few element-wise ops that TFLite runs as builtins.
- Assignment (`encode_targets`): a box trains at one level, chosen by its larger side in input
  pixels (stride 8 below `level_limits[0]`, default 64 px; stride 16 above), on the cells of that
  level whose centre lies inside the box and within `radius` (1.5) cells of its centre (FCOS's
  centre sampling: cells near a box's border see mostly background). The cell holding the box's
  centre is always positive, so every box trains, even a face smaller than a cell. A cell claimed
  by several boxes trains on the box whose centre it holds, else on the smallest; so only a box
  whose centre falls in the same cell as a smaller one's, at the same level (two faces less than
  a cell apart), can lose all its cells. A negative image has no positive cell.
- Loss (`DenseLoss`): sigmoid focal loss (alpha 0.25, gamma 2) over every cell, for the
  imbalance of face cells to background cells (a face has a few positive cells among 980 at
  224 px), plus GIoU on positive cells only; both summed and divided by the number of positive
  cells in the batch. A negative cell's box never contributes.
- Decoding (`DenseDecode`) is in the graph with Keras ops only, so the exported per-cell model
  (`export_model`) converts to TFLite with builtin ops. Top-K and non-maximum suppression
  (`DensePostprocess`, TensorFlow's `combined_non_max_suppression`) is one Keras layer, inside the
  saved model and applied eagerly by a host to the raw outputs of a TFLite / ONNX model
  (`postprocess`): `predict` and every export share the same code.

Box convention everywhere: `[x_min, y_min, x_max, y_max]` normalised to [0, 1] of the model's
square input (a plain resize of the image, so normalised boxes are also those of the original).
Cells are ordered level by level (stride 8 first), row-major within a level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import accumulate

import keras
from keras import ops

from datatool.core.errors import DatatoolError

from .losses import MaskedIoU, ordered
from .weights import BACKBONES, WeightsError, build_backbone, preprocess_layers

# (stride 8, stride 16) tap layers per backbone
TAPS = {
    "mobilenetv2": ("block_6_expand_relu", "block_13_expand_relu"),
    "vgg16": ("block4_conv3", "block5_conv3"),
}
LEVEL_LIMITS = (64.0,)      # px: a box whose larger side is under 64 px trains at stride 8
CENTER_RADIUS = 1.5         # cells, FCOS's centre sampling
MAX_LOG_DISTANCE = 8.0      # raw distances are clipped before exp: e^8 cells is beyond any image
MAX_DETECTIONS = 300  # K: a group photo of 200 faces still lists every face
IOU_THRESHOLD = 0.45
SCORE_THRESHOLD = 0.01
HEAD_GROUPS = 8             # GroupNorm groups of the head's convolutions
PRIOR = 0.01                # initial face probability of every cell (RetinaFace / FCOS bias init)
BN_MOMENTUM_FROM_SCRATCH = 0.9
OUTPUTS = ("boxes", "scores", "presence", "box")


# ---------------------------------------------------------------------------------------------
# the grid of cells


@dataclass(frozen=True)
class DenseGrid:
    """The cells of a dense detector: `image_size` (square input, px), `sizes` ((rows, cols) per
    level, finest first), `level_limits` (px, one per level but the last: the upper bound of a
    box's larger side at that level), `radius` (centre sampling, in cells)."""

    image_size: int
    sizes: tuple
    level_limits: tuple = LEVEL_LIMITS
    radius: float = CENTER_RADIUS

    def __post_init__(self):
        sizes = tuple((int(h), int(w)) for h, w in self.sizes)
        object.__setattr__(self, "sizes", sizes)
        object.__setattr__(self, "level_limits", tuple(float(v) for v in self.level_limits))
        if not sizes or any(h < 1 or w < 1 for h, w in sizes):
            raise ValueError(f"DenseGrid.sizes: expected (rows, cols) >= 1 per level, got {self.sizes}")
        if len(self.level_limits) != len(sizes) - 1:
            raise ValueError(f"DenseGrid.level_limits: expected {len(sizes) - 1} limit(s) for {len(sizes)} "
                             f"levels, got {self.level_limits}")
        if list(self.level_limits) != sorted(self.level_limits):
            raise ValueError(f"DenseGrid.level_limits: expected increasing values, got {self.level_limits}")

    @property
    def cells(self) -> int:
        """N, the number of cells over all levels."""
        return sum(h * w for h, w in self.sizes)

    def centres(self):
        """numpy float32 arrays over the N cells: `cx, cy` (cell centres, normalised), `cw, ch`
        (cell size, normalised) and int32 `level`."""
        import numpy as np

        cx, cy, cw, ch, level = [], [], [], [], []
        for k, (h, w) in enumerate(self.sizes):
            rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
            cx.append(((cols + 0.5) / w).ravel())
            cy.append(((rows + 0.5) / h).ravel())
            cw.append(np.full(h * w, 1.0 / w))
            ch.append(np.full(h * w, 1.0 / h))
            level.append(np.full(h * w, k))
        cat = np.concatenate
        return (cat(cx).astype("float32"), cat(cy).astype("float32"), cat(cw).astype("float32"),
                cat(ch).astype("float32"), cat(level).astype("int32"))

    def to_config(self) -> dict:
        return {"image_size": self.image_size, "sizes": [list(s) for s in self.sizes],
                "level_limits": list(self.level_limits), "radius": self.radius}


def grid_of(model) -> DenseGrid:
    """The `DenseGrid` of a dense detector (read from its `decode` layer)."""
    try:
        layer = model.get_layer("decode")
    except ValueError as e:
        raise DatatoolError(f"model {model.name!r} is not a dense detector (no 'decode' layer)") from e
    return DenseGrid(**layer.grid)


# ---------------------------------------------------------------------------------------------
# targets


def encode_targets(boxes, grid: DenseGrid):
    """Dense targets of one image, as a TensorFlow graph function (use inside `tf.data.map`).

    `boxes`: float32 `(n, 4)` normalised xyxy (n may be 0; corners in any order). Returns float32
    `(N, 5)`: per cell `[positive (0 or 1), x_min, y_min, x_max, y_max]` of the box it trains on
    (zeros on negative cells). See the module docstring for the assignment rules.
    """
    import tensorflow as tf

    cx, cy, cw, ch, level = (tf.constant(a) for a in grid.centres())
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
    boxes = tf.clip_by_value(tf.concat([tf.minimum(boxes[:, :2], boxes[:, 2:]),
                                        tf.maximum(boxes[:, :2], boxes[:, 2:])], axis=1), 0.0, 1.0)
    n = tf.shape(boxes)[0]
    x0, y0, x1, y1 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    side = tf.maximum(x1 - x0, y1 - y0) * float(grid.image_size)
    limits = tf.constant(grid.level_limits, tf.float32, shape=[len(grid.level_limits)])
    box_level = tf.reduce_sum(tf.cast(side[:, None] >= limits[None, :], tf.int32), axis=1)
    bcx, bcy = (x0 + x1) / 2, (y0 + y1) / 2

    # the cell holding each box's centre, at the box's level
    rows = tf.constant([h for h, _ in grid.sizes], tf.int32)
    cols = tf.constant([w for _, w in grid.sizes], tf.int32)
    offsets = tf.constant([0, *accumulate(h * w for h, w in grid.sizes)][:-1], tf.int32)
    w_l, h_l = tf.gather(cols, box_level), tf.gather(rows, box_level)
    col = tf.clip_by_value(tf.cast(tf.floor(bcx * tf.cast(w_l, tf.float32)), tf.int32), 0, w_l - 1)
    row = tf.clip_by_value(tf.cast(tf.floor(bcy * tf.cast(h_l, tf.float32)), tf.int32), 0, h_l - 1)
    centre_cell = tf.gather(offsets, box_level) + row * w_l + col

    # (N cells, n boxes)
    inside = ((cx[:, None] > x0) & (cx[:, None] < x1) & (cy[:, None] > y0) & (cy[:, None] < y1))
    central = ((tf.abs(cx[:, None] - bcx) <= grid.radius * cw[:, None])
               & (tf.abs(cy[:, None] - bcy) <= grid.radius * ch[:, None]))
    is_centre = tf.range(grid.cells, dtype=tf.int32)[:, None] == centre_cell[None, :]
    pos = (level[:, None] == box_level[None, :]) & ((inside & central) | is_centre)

    # the smallest box wins a cell, but a box's own centre cell goes to it first (areas are <= 1)
    area = tf.broadcast_to(((x1 - x0) * (y1 - y0))[None, :], tf.shape(pos)) - 2.0 * tf.cast(is_centre, tf.float32)
    # a column of +inf so argmin is defined for an image without boxes
    cost = tf.concat([tf.where(pos, area, math.inf), tf.fill([grid.cells, 1], math.inf)], axis=1)
    best = tf.argmin(cost, axis=1, output_type=tf.int32)
    positive = tf.reduce_any(pos, axis=1)
    padded = tf.concat([boxes, tf.zeros([1, 4])], axis=0)
    target = tf.gather(padded, tf.where(positive, best, n))
    return tf.concat([tf.cast(positive, tf.float32)[:, None], target], axis=1)


# ---------------------------------------------------------------------------------------------
# model parts


def build_dense_backbone(backbone: str, *, image_size: int, alpha: float = 1.0, weights: str = "imagenet"):
    """`backbone`: a Keras Model with two outputs, the stride-8 and stride-16 maps (`TAPS`).

    The full application is built with `trainer.weights.build_backbone` (so 'imagenet', 'none'
    and a local weights file of the whole notop network all work) and cut at its taps: the layers
    above them are dropped.
    """
    if backbone not in BACKBONES:
        raise WeightsError(f"--backbone: unknown backbone {backbone!r} (expected one of {', '.join(BACKBONES)})")
    full = build_backbone(backbone, image_size=image_size, alpha=alpha, weights=weights)
    if str(weights).lower() == "none":
        # Keras' MobileNetV2 keeps BatchNorm statistics with momentum 0.999: after a short fit
        # from scratch (a few hundred steps) the moving averages are still mostly their initial
        # values and inference sees other activations than training did
        for layer in full.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = BN_MOMENTUM_FROM_SCRATCH
    taps = [full.get_layer(name).output for name in TAPS[backbone]]
    return keras.Model(full.inputs, taps, name="backbone")


def build_dense_head(feature_shapes, *, channels: int = 64, depth: int = 2):
    """`head`: the tap maps `[(h8, w8, c8), (h16, w16, c16)]` -> raw per-cell outputs `(N, 5)`:
    `[face logit, l, t, r, b]` with the distances as logs of cells (see `DenseDecode`).

    Per level: a 1x1 lateral convolution to `channels`, the coarser level upsampled (nearest) and
    added (top-down), then `depth` separable 3x3 convolutions (GroupNorm, ReLU) and two 1x1
    outputs. The logit's bias starts at the prior `PRIOR` so the focal loss starts small.

    GroupNorm, as FCOS's head has, rather than BatchNorm: it keeps no moving statistics, so the
    head computes at inference exactly what it trained on. With BatchNorm, a short fit on a
    frozen ImageNet backbone (a few hundred steps while the head's weights still move fast) left
    moving variances 2-10x off the true ones, and the saved model found almost no face (test
    AP@0.5 0.04 where the same weights with re-estimated statistics reached 0.99).
    """
    inputs = [keras.Input(tuple(s), name=f"level{k}") for k, s in enumerate(feature_shapes)]
    lateral = [keras.layers.Conv2D(channels, 1, name=f"head_lateral{k}")(x) for k, x in enumerate(inputs)]
    for k in range(len(lateral) - 2, -1, -1):
        h, w = feature_shapes[k][0], feature_shapes[k][1]
        # x2 nearest, cropped to this level's size (a stride-2 map is ceil(h / 2) high). Not
        # keras.layers.Resizing: as a preprocessing layer it saves `training=True` in its node,
        # which then puts every later BatchNorm of a call without `training` (an export's) in
        # training mode
        up = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"head_up{k + 1}")(lateral[k + 1])
        extra = (2 * feature_shapes[k + 1][0] - h, 2 * feature_shapes[k + 1][1] - w)
        if any(extra):
            up = keras.layers.Cropping2D(((0, extra[0]), (0, extra[1])), name=f"head_crop{k + 1}")(up)
        lateral[k] = keras.layers.Add(name=f"head_merge{k}")([lateral[k], up])
    outs = []
    bias = -math.log((1 - PRIOR) / PRIOR)
    for k, x in enumerate(lateral):
        for d in range(depth):
            x = keras.layers.SeparableConv2D(channels, 3, padding="same", use_bias=False, name=f"head{k}_conv{d}")(x)
            x = keras.layers.GroupNormalization(HEAD_GROUPS, name=f"head{k}_gn{d}")(x)
            x = keras.layers.ReLU(name=f"head{k}_relu{d}")(x)
        logit = keras.layers.Conv2D(1, 1, bias_initializer=keras.initializers.Constant(bias), name=f"head{k}_score")(x)
        dist = keras.layers.Conv2D(4, 1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                                   name=f"head{k}_box")(x)
        h, w = feature_shapes[k][0], feature_shapes[k][1]
        raw = keras.layers.Concatenate(name=f"head{k}_concat")([logit, dist])
        outs.append(keras.layers.Reshape((h * w, 5), name=f"head{k}_cells")(raw))
    out = outs[0] if len(outs) == 1 else keras.layers.Concatenate(axis=1, name="head_cells")(outs)
    return keras.Model(inputs, out, name="head")


@keras.saving.register_keras_serializable(package="facekit")
class DenseDecode(keras.layers.Layer):
    """Raw head outputs `(b, N, 5)` -> `cells` `(b, N, 5)`: `[face logit, x_min, y_min, x_max,
    y_max]`, boxes normalised, not clipped.

    A cell at centre `(cx, cy)` of size `(cw, ch)` (normalised) with raw distances `(l, t, r, b)`
    predicts `[cx - e^l cw, cy - e^t ch, cx + e^r cw, cy + e^b ch]`. Keras ops only (builtin in
    TFLite): the centres are constants.
    """

    def __init__(self, grid: dict, **kwargs):
        super().__init__(**kwargs)
        import numpy as np

        self.grid = dict(grid)
        cx, cy, cw, ch, _ = DenseGrid(**self.grid).centres()
        self._centre = np.stack([cx, cy, cx, cy], axis=-1)[None]
        self._scale = np.stack([-cw, -ch, cw, ch], axis=-1)[None]

    def call(self, raw):
        raw = ops.cast(raw, "float32")
        dist = ops.exp(ops.clip(raw[..., 1:], -MAX_LOG_DISTANCE, MAX_LOG_DISTANCE))
        boxes = ops.convert_to_tensor(self._centre) + dist * ops.convert_to_tensor(self._scale)
        return ops.concatenate([raw[..., :1], boxes], axis=-1)

    def compute_output_shape(self, shape):
        return tuple(shape)

    def get_config(self):
        return {**super().get_config(), "grid": self.grid}


@keras.saving.register_keras_serializable(package="facekit")
class CellOutputs(keras.layers.Layer):
    """`cells` `(b, N, 5)` -> `[scores (b, N) (sigmoid of the logit), boxes (b, N, 4)]`: what an
    exported model gives and `DensePostprocess` takes."""

    def call(self, cells):
        return [ops.sigmoid(cells[..., 0]), cells[..., 1:]]

    def compute_output_spec(self, cells):
        b, n = cells.shape[0], cells.shape[1]
        return [keras.KerasTensor((b, n)), keras.KerasTensor((b, n, 4))]


@keras.saving.register_keras_serializable(package="facekit")
class DensePostprocess(keras.layers.Layer):
    """Per-cell `scores (b, N)` and `boxes (b, N, 4)` -> the detector's outputs:

    - `boxes` `(b, K, 4)`, clipped to [0, 1], and `scores` `(b, K)`: the best `K`
      (`max_detections`) after non-maximum suppression at `iou_threshold`, best first, cells under
      `score_threshold` dropped; padded with zero boxes and zero scores;
    - `presence` `(b, 1)`: the best cell's score (thresholds aside); `box` `(b, 4)`: its box.

    TensorFlow ops (`tf.image.combined_non_max_suppression`, batched): the same layer runs inside
    the Keras model and, eagerly, on a TFLite / ONNX model's per-cell outputs (`postprocess`).
    """

    def __init__(self, max_detections: int = MAX_DETECTIONS, iou_threshold: float = IOU_THRESHOLD,
                 score_threshold: float = SCORE_THRESHOLD, **kwargs):
        super().__init__(**kwargs)
        self.max_detections = int(max_detections)
        self.iou_threshold = float(iou_threshold)
        self.score_threshold = float(score_threshold)

    def call(self, scores, boxes):
        import tensorflow as tf

        scores = tf.cast(scores, tf.float32)
        boxes = tf.clip_by_value(tf.cast(boxes, tf.float32), 0.0, 1.0)
        # IoU does not care whether the boxes are yxyx (what the op's docs say) or xyxy
        nms_boxes, nms_scores, _, _ = tf.image.combined_non_max_suppression(
            boxes[:, :, None, :], scores[:, :, None], max_output_size_per_class=self.max_detections,
            max_total_size=self.max_detections, iou_threshold=self.iou_threshold,
            score_threshold=self.score_threshold, pad_per_class=False, clip_boxes=False)
        best = tf.argmax(scores, axis=1, output_type=tf.int32)
        presence = tf.reduce_max(scores, axis=1, keepdims=True)
        box = tf.gather(boxes, best, batch_dims=1)
        return {"boxes": nms_boxes, "scores": nms_scores, "presence": presence, "box": box}

    def compute_output_spec(self, scores, boxes):
        b, k = scores.shape[0], self.max_detections
        return {"boxes": keras.KerasTensor((b, k, 4)), "scores": keras.KerasTensor((b, k)),
                "presence": keras.KerasTensor((b, 1)), "box": keras.KerasTensor((b, 4))}

    def get_config(self):
        return {**super().get_config(), "max_detections": self.max_detections,
                "iou_threshold": self.iou_threshold, "score_threshold": self.score_threshold}


# ---------------------------------------------------------------------------------------------
# the whole model and its export


def build_dense_detector(*, backbone: str = "mobilenetv2", image_size: int = 224, alpha: float = 1.0,
                         weights: str = "imagenet", bn_inference: bool | None = None, channels: int = 64,
                         depth: int = 2, level_limits=LEVEL_LIMITS, radius: float = CENTER_RADIUS,
                         max_detections: int = MAX_DETECTIONS, iou_threshold: float = IOU_THRESHOLD,
                         score_threshold: float = SCORE_THRESHOLD):
    """A new dense detector: `image (b, s, s, 3)` 0-255 RGB -> `{"boxes": (b, K, 4), "scores":
    (b, K), "presence": (b, 1), "box": (b, 4)}` (see the module docstring and `DensePostprocess`).

    Parts named `preprocess`, `backbone`, `head` (as `trainer.models.build_detector`'s, so
    `set_trainable` and the feature cache apply), then `decode`, `cells` (the per-cell
    predictions the loss trains, through `training_model`), `cell_outputs` (what an export gives,
    `export_model`) and `postprocess`. `bn_inference` (default: True unless `weights='none'`)
    runs the backbone's BatchNorm in inference mode. `channels`, `depth`: the head's width and
    number of separable convolutions per level; `level_limits`, `radius`: see `DenseGrid`;
    `max_detections` (K), `iou_threshold`, `score_threshold`: see `DensePostprocess`.
    """
    if bn_inference is None:
        bn_inference = str(weights).lower() != "none"
    bb = build_dense_backbone(backbone, image_size=image_size, alpha=alpha, weights=weights)
    shapes = [tuple(int(d) for d in t.shape[1:]) for t in bb.outputs]
    grid = DenseGrid(image_size=image_size, sizes=[s[:2] for s in shapes], level_limits=level_limits, radius=radius)
    head = build_dense_head(shapes, channels=channels, depth=depth)

    image = keras.Input((image_size, image_size, 3), name="image")
    x = preprocess_layers(backbone)(image)
    feats = bb(x, training=False) if bn_inference else bb(x)
    cells = keras.layers.Identity(name="cells")(DenseDecode(grid.to_config(), name="decode")(head(feats)))
    scores, boxes = CellOutputs(name="cell_outputs")(cells)
    post = DensePostprocess(max_detections, iou_threshold, score_threshold, name="postprocess")(scores, boxes)
    outputs = {k: keras.layers.Identity(name=k)(post[k]) for k in OUTPUTS}
    return keras.Model(image, outputs, name=f"facekit_{backbone}_dense_detector")


def training_model(model):
    """The dense detector's twin for training: `image -> {"cells": (b, N, 5)}`, sharing every
    layer (and so every weight) with `model`, without the post-processing.

    Train (and cut for the feature cache) this one; save `model`. Keras wants a target for every
    output that has a metric, and NMS has nothing to learn: it would only cost time per step.
    """
    return keras.Model(model.inputs, {"cells": model.get_layer("cells").output}, name=model.name + "_train")


def export_model(model):
    """The part of a dense detector an export converts: `image -> {"scores": (b, N), "boxes":
    (b, N, 4)}` per cell, decoded, before NMS (sharing the model's layers). Apply `postprocess`
    to its outputs to get the detector's outputs."""
    scores, boxes = model.get_layer("cell_outputs").output
    return keras.Model(model.inputs, {"scores": scores, "boxes": boxes}, name=model.name + "_cells")


def postprocess_config(model) -> dict:
    """The post-processing settings saved in a dense detector (its `postprocess` layer)."""
    cfg = model.get_layer("postprocess").get_config()
    return {k: cfg[k] for k in ("max_detections", "iou_threshold", "score_threshold")}


def postprocess(scores, boxes, **config) -> dict:
    """NMS on per-cell outputs (`export_model`'s, from Keras, TFLite or ONNX), eagerly, with the
    layer the Keras model uses: `scores (b, N)`, `boxes (b, N, 4)` -> numpy `{"boxes" (b, K, 4),
    "scores" (b, K), "presence" (b, 1), "box" (b, 4)}`. `config`: `postprocess_config(model)`."""
    import numpy as np

    out = DensePostprocess(**config)(np.asarray(scores, np.float32), np.asarray(boxes, np.float32))
    return {k: np.asarray(v) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# loss and metric


def giou(a, b):
    """Generalised IoU of matching boxes `(..., 4)` xyxy -> `(...)`, in [-1, 1]."""
    a, b = ordered(a), ordered(b)
    inter_wh = ops.maximum(ops.minimum(a[..., 2:], b[..., 2:]) - ops.maximum(a[..., :2], b[..., :2]), 0.0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    iou = inter / ops.maximum(union, 1e-9)
    hull_wh = ops.maximum(a[..., 2:], b[..., 2:]) - ops.minimum(a[..., :2], b[..., :2])
    hull = hull_wh[..., 0] * hull_wh[..., 1]
    return iou - (hull - union) / ops.maximum(hull, 1e-9)


# a harmless box standing in for a negative cell's target, so no NaN reaches a masked gradient
_DUMMY = (0.25, 0.25, 0.75, 0.75)


@keras.saving.register_keras_serializable(package="facekit")
class DenseLoss(keras.losses.Loss):
    """Focal loss over every cell plus `box_weight` x (1 - GIoU) over positive cells, both divided
    by the number of positive cells in the batch (at least 1).

    `y_true` `(b, N, 5)` from `encode_targets`; `y_pred` `(b, N, 5)`: the model's `cells` output.
    """

    def __init__(self, *, box_weight: float = 2.0, alpha: float = 0.25, gamma: float = 2.0,
                 name: str = "dense_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.box_weight = float(box_weight)
        self.alpha = float(alpha)
        self.gamma = float(gamma)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        pos = y_true[..., 0]
        logit = y_pred[..., 0]
        p = ops.sigmoid(logit)
        ce = ops.maximum(logit, 0.0) - logit * pos + ops.log1p(ops.exp(-ops.abs(logit)))
        p_t = p * pos + (1 - p) * (1 - pos)
        alpha_t = self.alpha * pos + (1 - self.alpha) * (1 - pos)
        focal = ops.sum(alpha_t * ops.power(1.0 - p_t, self.gamma) * ce, axis=-1)

        mask = pos[..., None] > 0.5
        target = ops.where(mask, y_true[..., 1:], ops.convert_to_tensor(_DUMMY, "float32"))
        pred = ops.where(mask, y_pred[..., 1:], ops.convert_to_tensor(_DUMMY, "float32"))
        box = ops.sum(pos * (1.0 - giou(pred, target)), axis=-1)

        # per image, scaled so Keras' mean over the batch is the batch sum over its positives
        batch = ops.cast(ops.shape(pos)[0], "float32")
        return (focal + self.box_weight * box) * batch / ops.maximum(ops.sum(pos), 1.0)

    def get_config(self):
        return {**super().get_config(), "box_weight": self.box_weight, "alpha": self.alpha, "gamma": self.gamma}


@keras.saving.register_keras_serializable(package="facekit")
class PositiveIoU(MaskedIoU):
    """Mean IoU of the predicted box with its target over the positive cells (`cells` output)."""

    def parts(self, y_true, y_pred):
        return y_true[..., 0], y_true[..., 1:], y_pred[..., 1:]


@keras.saving.register_keras_serializable(package="facekit")
class PositiveRecall(keras.metrics.Metric):
    """Share of positive cells scored at least `threshold` (`cells` output): does the score map
    light up where the faces are."""

    def __init__(self, threshold: float = 0.5, name="cell_recall", **kwargs):
        super().__init__(name=name, **kwargs)
        self.threshold = float(threshold)
        self.hits = self.add_variable(shape=(), initializer="zeros", name="hits")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        pos = ops.cast(y_true[..., 0], "float32")
        hit = ops.cast(ops.sigmoid(ops.cast(y_pred[..., 0], "float32")) >= self.threshold, "float32")
        self.hits.assign_add(ops.sum(pos * hit))
        self.count.assign_add(ops.sum(pos))

    def result(self):
        return self.hits / ops.maximum(self.count, 1.0)

    def reset_state(self):
        self.hits.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


def compile_dense(model, *, optimizer, box_weight: float = 2.0) -> None:
    """Compile a `training_model` (or its feature-cache twin, whose output has the same name):
    `DenseLoss` and the metrics on `cells`."""
    model.compile(optimizer=optimizer, loss={"cells": DenseLoss(box_weight=box_weight)},
                  metrics={"cells": [PositiveIoU(), PositiveRecall()]})
