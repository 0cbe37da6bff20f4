"""The identity task - which person is this - on the same parts as the detector: its model,
training targets, metrics and evaluation (the `identity` entry of `trainer.tasks`).

The model: `image (0-255 RGB) -> preprocess -> backbone -> head -> {identity}`, built from the
same three named parts as the detector (`trainer.models`), so the transfer-learning phases,
`set_trainable` and a feature cache treat both alike:

- `head`: a sub-model from the backbone's feature map to `identity`, the softmax over the people
  of `labels.txt` (line i is class i): global average pooling, then three dense layers with
  dropout (256-128-64, the seeds' "three dense layers and softmax").

Answers: the most probable name, or `unknown` when its probability is below a threshold - a
recognizer that must say "nobody I know" (unlocking, attendance) needs that threshold more than
a few points of accuracy.

Layers of the identity side, each importing only those below it: this module; the embeddings
store (`trainer.enroll`: enrolled faces, embedding, nearest); the recognizer on top
(`trainer.recognizer`: softmax or nearest enrolled face, predict on images and live).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datatool.core.errors import DatatoolError

OUTPUT = "identity"
UNKNOWN = "unknown"
HIDDEN = (256, 128, 64)
OUTPUTS = {OUTPUT: "softmax over labels (line i of labels.txt is class i)"}


# ---------------------------------------------------------------------------------------------
# the model


def build_identity_head(feature_shape, num_classes: int, *, hidden=HIDDEN, dropout: float = 0.2):
    """`head`: backbone feature map `(h, w, c)` -> `{"identity": (num_classes,)}` softmax."""
    import keras

    feats = keras.Input(tuple(feature_shape), name="features")
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(feats)
    for k, units in enumerate(hidden, start=1):
        x = keras.layers.Dense(units, activation="relu", name=f"head_dense{k}")(x)
        x = keras.layers.Dropout(dropout, name=f"head_dropout{k}")(x)
    probs = keras.layers.Dense(num_classes, activation="softmax", name="head_identity")(x)
    return keras.Model(feats, {OUTPUT: probs}, name="head")


def assemble_identity(backbone_model, head_model, *, backbone: str, image_size: int, bn_inference: bool = True):
    """The full recognizer from its parts (as `trainer.models.assemble` does for the detector)."""
    import keras

    from .weights import preprocess_layers

    image = keras.Input((image_size, image_size, 3), name="image")
    x = preprocess_layers(backbone)(image)
    feats = backbone_model(x, training=False) if bn_inference else backbone_model(x)
    probs = keras.layers.Identity(name=OUTPUT)(head_model(feats)[OUTPUT])
    return keras.Model(image, {OUTPUT: probs}, name=f"facekit_{backbone}_identity")


def build_identity_model(*, num_classes: int, backbone: str = "mobilenetv2", image_size: int = 224,
                         alpha: float = 1.0, weights: str = "imagenet", bn_inference: bool | None = None):
    """A new recognizer for `num_classes` people; `bn_inference` as in `build_detector`."""
    from .weights import build_backbone

    if num_classes < 2:
        raise DatatoolError(f"identity: {num_classes} person in labels.txt; a recognizer needs at least two "
                            f"people to tell apart")
    if bn_inference is None:
        bn_inference = str(weights).lower() != "none"
    bb = build_backbone(backbone, image_size=image_size, alpha=alpha, weights=weights)
    head = build_identity_head(bb.output.shape[1:], num_classes)
    return assemble_identity(bb, head, backbone=backbone, image_size=image_size, bn_inference=bn_inference)


def compile_identity(model, *, lr: float) -> None:
    """Compile with a fresh Adam: categorical cross-entropy on one-hot targets, accuracy."""
    import keras

    model.compile(optimizer=keras.optimizers.Adam(lr), loss={OUTPUT: keras.losses.CategoricalCrossentropy()},
                  metrics={OUTPUT: [keras.metrics.CategoricalAccuracy(name="accuracy")]})


def one_hot_targets(num_classes: int):
    """The pipeline's targets (`trainer.data.make_dataset`): a parsed record ->
    `{"identity": (num_classes,)}`, its `image/class/label` one-hot."""
    def targets(record) -> dict:
        import tensorflow as tf

        return {OUTPUT: tf.one_hot(record["class_label"], num_classes)}

    return targets


def people(data_info: dict, tfdir: Path) -> int:
    """How many people the records name (classes of the softmax); at least two, or an error."""
    labels = data_info["labels"]
    if len(labels) < 2:
        raise DatatoolError(f"{Path(tfdir) / 'labels.txt'}: expected one name per line for at least two people "
                            f"(written by `datatool split --task identity`), got {labels}")
    return len(labels)


# `trainer.fit.plot_curves` panels for an identity run: (history key, title)
CURVE_PANELS = [("loss", "loss (categorical cross-entropy)"), ("accuracy", "accuracy")]


def run_labels(config: dict, run: Path) -> list[str]:
    labels = config.get("labels") or []
    if config.get("task") != "identity":
        raise DatatoolError(f"{run}: a {config.get('task', 'detection')} model, not a recognizer "
                            f"(train one on `datatool split --task identity` records)")
    if len(labels) < 2:
        raise DatatoolError(f"{Path(run) / 'config.json'}: labels: expected the names of the people, got {labels!r}")
    return [str(n) for n in labels]


# ---------------------------------------------------------------------------------------------
# answers and metrics (numpy only)


def decide(probs, labels, *, threshold: float = 0.5) -> list[tuple[str, float, int]]:
    """`(name, probability, class index)` per row of `probs` `(n, classes)`: the most probable
    person, or `unknown` (index -1) when that probability is below `threshold`."""
    p = np.asarray(probs, np.float64).reshape(len(probs), -1) if len(probs) else np.zeros((0, len(labels)))
    if p.shape[1] != len(labels):
        raise DatatoolError(f"the model gives {p.shape[1]} classes but the run has {len(labels)} labels")
    out = []
    for row in p:
        k = int(np.argmax(row))
        score = float(row[k])
        out.append((labels[k], score, k) if score >= threshold else (UNKNOWN, score, -1))
    return out


def confusion(y_true, y_pred, num_classes: int) -> np.ndarray:
    """`(classes, classes)` counts, rows the true person, columns the predicted one."""
    m = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(m, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return m


def identity_metrics(y_true, probs, *, labels, threshold: float = 0.5) -> dict:
    """Accuracy (argmax), per-person precision / recall / F1 / support, macro averages, the
    confusion matrix, and what `threshold` does: the share answered (max probability >=
    threshold, the rest would be `unknown`) and the accuracy of those answers.

    Precision of a person nobody was predicted as is 0 (scikit-learn's `zero_division=0`).
    """
    y = np.asarray(y_true, np.int64).ravel()
    p = np.asarray(probs, np.float64).reshape(len(y), len(labels))
    pred = p.argmax(axis=1) if len(y) else np.zeros(0, np.int64)
    m = confusion(y, pred, len(labels))
    per_person = {}
    for k, name in enumerate(labels):
        tp = int(m[k, k])
        predicted, actual = int(m[:, k].sum()), int(m[k, :].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_person[name] = {"precision": precision, "recall": recall, "f1": f1, "support": actual}
    present = [v for v in per_person.values() if v["support"]]
    top = p.max(axis=1) if len(y) else np.zeros(0)
    answered = top >= threshold
    return {
        "images": int(len(y)),
        "accuracy": float((pred == y).mean()) if len(y) else 0.0,
        "macro_precision": float(np.mean([v["precision"] for v in present])) if present else 0.0,
        "macro_recall": float(np.mean([v["recall"] for v in present])) if present else 0.0,
        "macro_f1": float(np.mean([v["f1"] for v in present])) if present else 0.0,
        "per_person": per_person,
        "labels": list(labels),
        "confusion_matrix": m.tolist(),
        "threshold": threshold,
        "answered": float(answered.mean()) if len(y) else 0.0,
        "unknown": int((~answered).sum()),
        "accuracy_answered": float((pred[answered] == y[answered]).mean()) if answered.any() else None,
    }


def plot_confusion(metrics: dict, path: Path, *, title: str) -> None:
    """The confusion matrix as a picture: counts in the cells, names on both axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from datatool.core.fsutil import atomic_path

    m = np.asarray(metrics["confusion_matrix"])
    labels = metrics["labels"]
    n = len(labels)
    side = min(16, 2.5 + 0.6 * n)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    ax.imshow(m, cmap="Blues", vmin=0, vmax=max(1, m.max()))
    ax.set_xticks(range(n), labels, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=9,
                        color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_title(f"{title}\naccuracy {metrics['accuracy']:.3f}, macro F1 {metrics['macro_f1']:.3f}")
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# evaluate


def predict_split(model, tfdir: Path, split: str, *, image_size: int, num_classes: int,
                  batch_size: int = 32) -> dict:
    """Softmax over a split: `probs` `(n, classes)`, `labels` `(n,)` true 0-based classes, `ids`."""
    import tensorflow as tf

    from . import data as tdata

    ds = tdata.make_dataset(tfdir, split, image_size=image_size, batch_size=batch_size, with_meta=True,
                            targets=one_hot_targets(num_classes))
    probs, ys, ids = [], [], []
    try:
        for images, targets, meta in ds:
            probs.append(np.asarray(model.predict_on_batch(images)[OUTPUT]))
            ys.append(np.asarray(targets[OUTPUT]))
            ids.extend(s.decode("utf-8", "replace") for s in np.asarray(meta["source_id"]))
    except tf.errors.OpError as e:
        raise DatatoolError(f"{tfdir}: {split} shards: cannot read records ({e.message.splitlines()[0]})") from e
    if not ids:
        raise DatatoolError(f"{tfdir}: the {split} split is empty")
    onehot = np.concatenate(ys)
    if (onehot.sum(axis=1) != 1).any():  # tf.one_hot of a label outside 0..classes-1 is all zeros
        bad = ids[int(np.flatnonzero(onehot.sum(axis=1) != 1)[0])]
        raise DatatoolError(f"{tfdir}: {bad}: image/class/label: not a class of the run's {num_classes} "
                            f"labels (records from another split of the data?)")
    return {"probs": np.concatenate(probs), "labels": onehot.argmax(axis=1), "ids": ids}


def evaluate_identity(run: Path, tfdir: Path, *, model, config: dict, split: str = "test",
                      threshold: float = 0.5, out: Path | None = None, batch_size: int = 32) -> dict:
    """A recognizer on one split: `identity_metrics` -> `metrics.json` + `confusion_matrix.png`
    in `out` (default RUN). The identity entry's `evaluate` (`trainer.tasks.evaluate`)."""
    from datatool.core.fsutil import write_json_atomic

    from . import data as tdata

    labels = run_labels(config, run)
    data_labels = tdata.read_labels(tfdir)
    if data_labels and data_labels != labels:
        raise DatatoolError(f"{Path(tfdir) / 'labels.txt'}: {data_labels} differ from the run's labels {labels} "
                            f"(class numbers would not mean the same people)")
    pred = predict_split(model, tfdir, split, image_size=int(config["image_size"]), num_classes=len(labels),
                         batch_size=batch_size)
    metrics = identity_metrics(pred["labels"], pred["probs"], labels=labels, threshold=threshold)
    out = Path(out) if out else Path(run)
    out.mkdir(parents=True, exist_ok=True)
    plot_confusion(metrics, out / "confusion_matrix.png",
                   title=f"{Path(run).name} on {split} ({metrics['images']} images)")
    metrics.update(task="identity", split=split, tfdir=str(Path(tfdir).resolve()), run=str(Path(run).resolve()),
                   record_sha256=tdata.record_hash(tfdir))
    write_json_atomic(out / "metrics.json", metrics)
    return metrics


def summary_lines(m: dict) -> list[str]:
    lines = [f"{m['split']}: {m['images']} images of {len(m['labels'])} people",
             f"accuracy {m['accuracy']:.3f}  macro precision {m['macro_precision']:.3f}  "
             f"recall {m['macro_recall']:.3f}  F1 {m['macro_f1']:.3f}"]
    width = max(len(n) for n in m["labels"])
    for name, v in m["per_person"].items():
        lines.append(f"  {name.ljust(width)}  precision {v['precision']:.3f}  recall {v['recall']:.3f}  "
                     f"F1 {v['f1']:.3f}  ({v['support']} images)")
    acc = m["accuracy_answered"]
    lines.append(f"threshold {m['threshold']:g}: {m['answered']:.1%} answered, {m['unknown']} 'unknown'; "
                 f"accuracy of answers {'n/a' if acc is None else f'{acc:.3f}'}")
    return lines
