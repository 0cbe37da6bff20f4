"""The trainer by task: one table entry per kind of model `trainer fit` makes.

`fit`, `evaluate`, `predict` and the CLI look a run's entry up here (`get`, `of_run`) instead of
branching on its task. An entry is keyed by the records' task (`detection`, `identity`: what
`datatool split --task` wrote) and a head kind (`--head`). Each gives:

- `build(config, *, num_classes)`: a new model of three named parts, `preprocess`, `backbone`
  and `head` (so `trainer.models.set_trainable`, the phases and the feature cache treat every
  task alike); `config` is a `trainer.fit.FitConfig`;
- `compile(model, *, lr, config)`: optimizer, losses, loss weights and metrics (what trains is
  set before, by `set_trainable`, the same for every task);
- `targets(model, num_classes)`: the tf.data targets, a function from a parsed record to
  `{output name: tensor}` (`trainer.data.make_dataset(targets=...)`); `model` is the built
  model, whose shape some targets follow (the dense head's grid of cells);
- `training_model(model)`: what `fit` compiles and trains (the model itself, or a twin sharing
  its layers without parts that have nothing to learn, e.g. the dense head's NMS); the model
  saved is always the full one;
- `fine_tune_layers`: `--fine-tune-layers` default per backbone; `box_weight`: `--box-weight`
  default;
- `num_classes(data_info, tfdir)`: classes of the head, checked against the records;
- `panels`: `curves.png` panels, `(history key, title)`; `outputs`: the saved model's outputs,
  described in `config.json`; `scratch_bn_momentum`: BatchNorm momentum from scratch;
- `evaluate(run, tfdir, *, model, config, split, iou, threshold, out, batch_size) -> metrics`,
  `summary_lines(metrics)`, `report`: the picture it writes beside `metrics.json`;
- `predict(run, inputs, *, out, threshold, overwrite, **options) -> rows`,
  `live(run, source, *, threshold, max_frames, **options) -> stats`,
  `predict_summary(rows, *, threshold, out) -> str`, `predict_options`: the `trainer predict`
  options only this entry takes (e.g. a recognizer's `detector`, `mode`).

Adding a head kind is adding an entry: issue 13's dense detector is `("detection", "dense")`
with its own build / compile / targets / panels / evaluate (from `trainer.dense`), reusing
detection's predict (`trainer.predict`, which reads any detector through
`trainer.detector.RunDetector`: `boxes` + `scores` outputs give every face), then
`DEFAULT_HEAD["detection"] = "dense"`. `--head` choices, the unknown-head error (`--head dense`
with identity records) and `config.json`'s `head` follow from the table. Runs made before heads
had names have no `head` in `config.json`; they keep `HEAD_OF_OLD_RUNS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from datatool.core.errors import DatatoolError

from . import data as tdata
from . import evaluate as detection_eval
from . import identity, predict, recognizer
from .models import DEFAULT_FINE_TUNE_LAYERS

DEFAULT_TASK = "detection"


class TaskError(DatatoolError):
    """A task or head the trainer has no entry for."""


@dataclass(frozen=True)
class Task:
    """One kind of model: its head, training, evaluation and use (see the module docstring)."""

    name: str
    head: str
    title: str  # what a run of this entry is, in messages: "face detector", "recognizer"
    build: Callable
    compile: Callable
    targets: Callable
    num_classes: Callable
    panels: tuple
    outputs: Mapping[str, str]
    evaluate: Callable
    summary_lines: Callable
    report: str
    predict: Callable
    live: Callable
    predict_summary: Callable
    predict_options: tuple = field(default=())
    scratch_bn_momentum: float = 0.9
    training_model: Callable = field(default=lambda model: model)
    fine_tune_layers: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_FINE_TUNE_LAYERS))
    box_weight: float = 0.0


# ---------------------------------------------------------------------------------------------
# detection, one-box head: face presence + the largest box (the tutorials' model)


def _build_single(config, *, num_classes: int = 0):
    from .models import build_detector

    return build_detector(backbone=config.backbone, image_size=config.image_size, alpha=config.alpha,
                          weights=config.weights)


def _compile_single(model, *, lr: float, config) -> None:
    import keras

    from .losses import MaskedIoU, localization_loss

    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss={"presence": keras.losses.BinaryCrossentropy(), "box": localization_loss},
        loss_weights={"presence": 1.0, "box": config.resolved_box_weight()},
        metrics={"presence": [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")],
                 "box": [MaskedIoU(name="iou")]},
    )


SINGLE = Task(
    name="detection", head="single", title="face detector",
    build=_build_single, compile=_compile_single,
    targets=lambda model, num_classes: tdata.box_targets,
    num_classes=lambda data_info, tfdir: 0,
    panels=(("loss", "total loss"), ("presence_loss", "presence loss (BCE)"), ("box_loss", "box loss"),
            ("presence_auc", "presence AUC"), ("presence_accuracy", "presence accuracy"), ("box_iou", "box IoU")),
    outputs={"presence": "sigmoid, 1: probability of a face",
             "box": "x_min, y_min, x_max, y_max normalized to [0, 1]"},
    evaluate=detection_eval.evaluate_detection, summary_lines=detection_eval.summary_lines, report="pr_curve.png",
    predict=predict.predict_paths, live=predict.live, predict_summary=predict.summary,
    # Keras' MobileNetV2 uses momentum 0.999: on a small set from scratch its moving statistics
    # would still be near their initial values after the whole fit, and validation (which uses
    # them) stays stuck. 0.9 settles within a few dozen steps.
    scratch_bn_momentum=0.9,
    # seed 004's weighting: the box loss is a few hundredths when the presence loss is ~0.5
    box_weight=20.0,
)


# ---------------------------------------------------------------------------------------------
# detection, dense head: a score and a box per feature-map cell, then NMS (every face)


def _build_dense(config, *, num_classes: int = 0):
    from .dense import build_dense_detector

    return build_dense_detector(backbone=config.backbone, image_size=config.image_size, alpha=config.alpha,
                                weights=config.weights)


def _compile_dense(model, *, lr: float, config) -> None:
    import keras

    from .dense import compile_dense

    compile_dense(model, optimizer=keras.optimizers.Adam(lr), box_weight=config.resolved_box_weight())


def _dense_targets(model, num_classes: int):
    from .dense import encode_targets, grid_of

    grid = grid_of(model)

    def targets(record) -> dict:
        return {"cells": encode_targets(record["boxes"], grid)}

    return targets


def _dense_training_model(model):
    from .dense import training_model

    return training_model(model)


DENSE = Task(
    name="detection", head="dense", title="face detector",
    build=_build_dense, compile=_compile_dense, targets=_dense_targets,
    num_classes=lambda data_info, tfdir: 0,
    panels=(("loss", "total loss (focal + GIoU)"), ("iou", "IoU of face cells' boxes"),
            ("cell_recall", "face cells scored >= 0.5")),
    outputs={"boxes": "(K, 4) x_min, y_min, x_max, y_max normalized to [0, 1], after NMS, best first",
             "scores": "(K,) face probability of each box; 0 pads K",
             "presence": "the best score", "box": "the best box"},
    evaluate=detection_eval.evaluate_detection, summary_lines=detection_eval.summary_lines, report="pr_curve.png",
    predict=predict.predict_paths, live=predict.live, predict_summary=predict.summary,
    training_model=_dense_training_model,
    # the dense backbone stops at stride 16: 12 layers from its top cut cleanly at block_11_add
    fine_tune_layers={"mobilenetv2": 12, "vgg16": 4},
    # focal and GIoU losses are of a size: measured on the demo data (bench/dense_probe.py)
    box_weight=2.0,
)


# ---------------------------------------------------------------------------------------------
# identity, softmax head: which of the people of labels.txt


def _build_identity(config, *, num_classes: int):
    return identity.build_identity_model(num_classes=num_classes, backbone=config.backbone,
                                         image_size=config.image_size, alpha=config.alpha, weights=config.weights)


def _evaluate_identity(run, tfdir, *, iou: float, **kwargs) -> dict:
    # `iou` is about boxes, which a recognizer does not output
    return identity.evaluate_identity(run, tfdir, **kwargs)


SOFTMAX = Task(
    name="identity", head="softmax", title="recognizer",
    build=_build_identity, compile=lambda model, *, lr, config: identity.compile_identity(model, lr=lr),
    targets=lambda model, num_classes: identity.one_hot_targets(num_classes), num_classes=identity.people,
    panels=tuple(identity.CURVE_PANELS), outputs=identity.OUTPUTS,
    evaluate=_evaluate_identity, summary_lines=identity.summary_lines, report="confusion_matrix.png",
    predict=recognizer.predict_identity_paths, live=recognizer.live_identity, predict_summary=recognizer.summary,
    predict_options=("detector", "mode", "max_distance", "margin"),
    # A recognizer's set is a few crops per person - a handful of steps per epoch - so its
    # statistics must follow faster than a detector's: with 0.9 the validation accuracy stayed at
    # chance for ~10 epochs on 3 x 14 crops.
    scratch_bn_momentum=0.5,
)


TASKS: dict[tuple[str, str], Task] = {(t.name, t.head): t for t in (DENSE, SINGLE, SOFTMAX)}
# the head `trainer fit` gives a task when --head is not given
DEFAULT_HEAD = {"detection": "dense", "identity": "softmax"}
# the head of a run whose config.json names none (made before heads had names); never changes
HEAD_OF_OLD_RUNS = {"detection": "single", "identity": "softmax"}
TASK_NAMES = tuple(DEFAULT_HEAD)
HEADS = tuple(sorted({head for _, head in TASKS}))


def get(task: str | None = None, head: str | None = None) -> Task:
    """The entry for `task` (default detection) and `head` (default the task's `DEFAULT_HEAD`)."""
    task = task or DEFAULT_TASK
    if task not in DEFAULT_HEAD:
        raise TaskError(f"--task: {task!r} is not one of {', '.join(TASK_NAMES)}")
    head = head or DEFAULT_HEAD[task]
    if (task, head) not in TASKS:
        heads = ", ".join(h for t, h in TASKS if t == task)
        raise TaskError(f"--head {head}: not a head for {task} (the {task} heads: {heads})")
    return TASKS[(task, head)]


def of_run(config: dict, run: Path) -> Task:
    """The entry a run was trained with, from its `config.json`."""
    task = config.get("task", DEFAULT_TASK)
    if task not in DEFAULT_HEAD:
        raise TaskError(f"{Path(run) / 'config.json'}: task: {task!r} is not one of {', '.join(TASK_NAMES)}")
    head = config.get("head") or HEAD_OF_OLD_RUNS[task]
    if (task, head) not in TASKS:
        raise TaskError(f"{Path(run) / 'config.json'}: head: {head!r} is not a {task} head this trainer knows "
                        f"({', '.join(h for t, h in TASKS if t == task)})")
    return TASKS[(task, head)]


def evaluate(run: Path, tfdir: Path, *, split: str = "test", iou: float = 0.5, threshold: float = 0.5,
             out: Path | None = None, batch_size: int = 32, overwrite: bool = False) -> dict:
    """Evaluate RUN's `model.keras` on TFDIR's `split` the way its entry evaluates; writes
    `metrics.json` and the entry's `report` picture into `out` (default RUN). Refuses, before
    loading the model, to replace any of them unless `overwrite`. Returns the metrics."""
    from datatool.core.fsutil import refuse_existing

    from .models import load_run, read_config

    if not 0 < iou <= 1:
        raise DatatoolError(f"--iou: {iou} is not in (0, 1]")
    task = of_run(read_config(run), run)
    dest = Path(out) if out else Path(run)
    written = ("metrics.json", task.report) + (("worst.png",) if task.name == "detection" else ())
    refuse_existing(*(dest / name for name in written), overwrite=overwrite)
    model, config = load_run(run)
    records = tdata.read_task(tfdir)
    if records != task.name:
        raise DatatoolError(f"{tfdir}: holds {records} records but {run} is a {task.name} model")
    return task.evaluate(run, tfdir, model=model, config=config, split=split, iou=iou, threshold=threshold,
                         out=out, batch_size=batch_size)
