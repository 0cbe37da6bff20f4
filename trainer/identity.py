"""Face recognition - which person is this - on the same parts as the detector.

The model: `image (0-255 RGB) -> preprocess -> backbone -> head -> {identity}`, built from the
same three named parts as the detector (`trainer.models`), so the transfer-learning phases,
`set_trainable` and a feature cache treat both alike:

- `head`: a sub-model from the backbone's feature map to `identity`, the softmax over the people
  of `labels.txt` (line i is class i): global average pooling, then three dense layers with
  dropout (256-128-64, the seeds' "three dense layers and softmax").

Answers: the most probable name, or `unknown` when its probability is below a threshold - a
recognizer that must say "nobody I know" (unlocking, attendance) needs that threshold more than
a few points of accuracy. Enrolled people (`trainer.enroll`) are answered by nearest embedding.

This module also holds the identity metrics (plain numpy, unit-tested), `evaluate_identity`
(metrics.json + confusion_matrix.png) and `predict_identity_paths` (names per image or per face
found by a detector in a full frame).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datatool.core.errors import DatatoolError

OUTPUT = "identity"
UNKNOWN = "unknown"
HIDDEN = (256, 128, 64)
MODES = ("auto", "softmax", "enrolled")
DEFAULT_DETECTOR = "mtcnn"  # finds every face in a frame (Haar misses profiles)
FIELDS = ["source", "frame", "face", "width", "height", "name", "score", "distance", "mode", "label",
          "x_min", "y_min", "x_max", "y_max"]


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

    from .models import preprocess_layers

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


def is_identity_model(model) -> bool:
    return OUTPUT in list(getattr(model, "output_names", None) or [])


def compile_identity(model, *, fine_tune_layers, lr: float, freeze_batchnorm: bool) -> int:
    """Set what trains (`trainer.models.set_trainable`) and compile: categorical cross-entropy on
    one-hot targets, accuracy. Returns trainable backbone layers."""
    import keras

    from .models import set_trainable

    n = set_trainable(model, fine_tune_layers, freeze_batchnorm=freeze_batchnorm)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss={OUTPUT: keras.losses.CategoricalCrossentropy()},
                  metrics={OUTPUT: [keras.metrics.CategoricalAccuracy(name="accuracy")]})
    return n


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
                            task="identity", num_classes=num_classes)
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
    in `out` (default RUN). Called by `trainer.evaluate.evaluate` for identity runs."""
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


# ---------------------------------------------------------------------------------------------
# predict


@dataclass(frozen=True)
class Answer:
    """Who one face is: `name` (or `unknown`), `score` (softmax probability, or cosine similarity
    `1 - distance` to the nearest enrolled face), `distance` (enrolled mode only), `mode`, `label`
    (the best guess before the threshold, so a near miss can be seen)."""

    name: str
    score: float
    mode: str
    label: str
    distance: float | None = None


class Recognizer:
    """A trained identity run answering "who is this" for face crops (RGB arrays of any size).

    `mode`: `softmax` (the trained people), `enrolled` (nearest embedding among the people added
    with `trainer enroll`), or `auto` (enrolled when the run has enrolments, else softmax).
    `threshold`: the least softmax probability to answer a name; `max_distance`: the largest
    cosine distance to an enrolled face to answer its name (default: the run's enrolled store's).
    """

    def __init__(self, run: Path, *, mode: str = "auto", threshold: float = 0.5, max_distance: float | None = None):
        from . import enroll as E
        from .models import load_run

        if mode not in MODES:
            raise DatatoolError(f"--mode: {mode!r} is not one of {', '.join(MODES)}")
        if not 0 <= threshold <= 1:
            raise DatatoolError(f"--threshold: {threshold} is not a probability in [0, 1]")
        self.run = Path(run)
        self.model, self.config = load_run(run)
        self.labels = run_labels(self.config, run)
        self.size = int(self.config["image_size"])
        self.threshold = threshold
        self.store = E.load_enrolled(run, model_path=self.run / "model.keras")
        if mode == "auto":
            mode = "enrolled" if self.store is not None else "softmax"
        if mode == "enrolled" and self.store is None:
            raise DatatoolError(f"{run}: --mode enrolled: nobody is enrolled (add people with "
                                f"`trainer enroll {run} --person NAME IMAGES...`)")
        self.mode = mode
        if max_distance is not None and not 0 <= max_distance <= 2:
            raise DatatoolError(f"--max-distance: {max_distance} is not a cosine distance in [0, 2]")
        self.max_distance = max_distance if max_distance is not None else E.DEFAULT_MAX_DISTANCE
        self._embedder = E.embedding_model(self.model) if mode == "enrolled" else None

    def probabilities(self, crops) -> np.ndarray:
        import tensorflow as tf

        from .data import resize_images

        batch = tf.stack([resize_images(np.asarray(c), self.size) for c in crops])
        return np.asarray(self.model.predict_on_batch(batch)[OUTPUT])

    def recognize(self, crops) -> list[Answer]:
        from . import enroll as E

        if not len(crops):
            return []
        if self.mode == "softmax":
            probs = self.probabilities(crops)
            best = [self.labels[int(k)] for k in probs.argmax(axis=1)]
            return [Answer(name, score, "softmax", label)
                    for (name, score, _), label in zip(decide(probs, self.labels, threshold=self.threshold), best)]
        emb = E.embed(self._embedder, crops, image_size=self.size)
        return [Answer(name if dist <= self.max_distance else UNKNOWN, 1.0 - dist, "enrolled", name, dist)
                for name, dist in E.nearest(self.store, emb)]


def _caption(answer: Answer) -> str:
    return f"{answer.name} {answer.score:.2f}"


def find_faces(detector, rgb, *, margin: float, size: int):
    """`[(box xyxy pixels, crop)]` for every face `detector` finds (`None`: the whole image is the
    face). Crops are cut by `datatool.core.faces.cut_face`, the rule `datatool crop` trains on."""
    from datatool.core.faces import cut_face

    h, w = rgb.shape[:2]
    if detector is None:
        return [((0.0, 0.0, float(w), float(h)), rgb)]
    out = []
    for det in detector.detect(rgb):
        crop, _ = cut_face(rgb, det.box, margin=margin, size=size)
        out.append((tuple(float(v) for v in det.box.xyxy), crop))
    return out


def annotate(rgb, faces, answers, *, min_side: int = 240):
    """A copy of `rgb` with each face's box and `name score` (grey for `unknown`). Images smaller
    than `min_side` (face crops) are enlarged first so the name stays readable."""
    import cv2

    from datatool.core.draw import draw_boxes

    h, w = rgb.shape[:2]
    k = max(1, -(-min_side // max(1, min(h, w))))
    img = cv2.resize(rgb, (w * k, h * k), interpolation=cv2.INTER_NEAREST) if k > 1 else rgb
    for (box, _), a in zip(faces, answers):
        color = (140, 140, 140) if a.name == UNKNOWN else (0, 200, 83)
        img = draw_boxes(img, [tuple(v * k for v in box)], captions=[_caption(a)], color=color)
    return img


def training_margin(config: dict, default: float) -> float:
    """The crop margin the run's training faces were cut with (`datatool crop` / `capture
    --crop-faces`, found in the TFDIR's provenance chain), else `default`."""
    record = (config.get("data") or {}).get("dataset_json")
    for _ in range(8):
        if not isinstance(record, dict):
            break
        if record.get("stage") == "crop" and isinstance(record.get("margin"), (int, float)):
            return float(record["margin"])
        parents = record.get("parents") or [{}]
        record = record.get("parent") or (parents[0].get("record") if isinstance(parents[0], dict) else None)
    return default


def open_detector(spec: str | None, *, run: Path):
    """`None` for `--detector none` (inputs are face crops), else `datatool.core.detect.get_detector`."""
    if spec is None:
        spec = DEFAULT_DETECTOR
    if str(spec).strip().lower() == "none":
        return None
    from datatool.core.detect import get_detector

    if Path(spec).expanduser().resolve() == Path(run).resolve():
        raise DatatoolError(f"--detector {spec}: that is the recognizer itself; give a face detector "
                            f"(haar, mtcnn or a detection run)")
    return get_detector(spec)


def predict_identity_paths(run: Path, inputs, *, out: Path, threshold: float = 0.5, detector: str | None = None,
                           mode: str = "auto", max_distance: float | None = None, margin: float | None = None,
                           overwrite: bool = False, progress: bool = True) -> list[dict]:
    """Name the faces in every image under `inputs`: one row per face (per image with
    `detector='none'`, where each image is a face crop) in `out/predictions.csv/json`, and an
    annotated copy of each image (`out/annotated/...jpg`, names written on the faces)."""
    import csv
    import io

    from tqdm import tqdm

    from datatool.core.faces import DEFAULT_MARGIN
    from datatool.core.draw import save_rgb
    from datatool.core.fsutil import prepare_output_dir, write_text_atomic
    from datatool.core.images import load_rgb

    from .predict import collect_inputs

    items = collect_inputs(inputs)
    videos = [str(p) for p, _, kind in items if kind == "video"]
    if videos:
        raise DatatoolError(f"{videos[0]}: videos are not supported with a recognizer yet; extract frames "
                            f"(`datatool capture DIR --source {videos[0]}`) and predict on the folder")
    recognizer = Recognizer(run, mode=mode, threshold=threshold, max_distance=max_distance)
    margin = training_margin(recognizer.config, DEFAULT_MARGIN) if margin is None else margin
    found = open_detector(detector, run=run)
    out = prepare_output_dir(Path(out), overwrite=overwrite)
    rows, problems = [], []
    for path, name, _ in tqdm(items, desc="images", unit="img", disable=not progress):
        try:
            rgb = load_rgb(path)
        except DatatoolError as e:  # a corrupt file is reported, the others go on
            problems.append(str(e))
            continue
        h, w = rgb.shape[:2]
        faces = find_faces(found, rgb, margin=margin, size=recognizer.size)
        answers = recognizer.recognize([c for _, c in faces])
        save_rgb(out / "annotated" / Path(name).with_suffix(".jpg"), annotate(rgb, faces, answers))
        if not faces:
            problems.append(f"{path}: no face found")
        for k, ((box, _), a) in enumerate(zip(faces, answers)):
            rows.append({"source": str(path), "frame": None, "face": k, "width": w, "height": h, "name": a.name,
                         "score": round(a.score, 6), "distance": None if a.distance is None else round(a.distance, 6),
                         "mode": a.mode, "label": a.label, "x_min": round(box[0], 2), "y_min": round(box[1], 2),
                         "x_max": round(box[2], 2), "y_max": round(box[3], 2)})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r[k] is None else r[k]) for k in FIELDS})
    write_text_atomic(out / "predictions.csv", buf.getvalue())
    write_text_atomic(out / "predictions.json", json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
    if problems:
        write_text_atomic(out / "problems.txt", "\n".join(problems) + "\n")
    return rows


def live_identity(run: Path, source: str, *, threshold: float = 0.5, detector: str | None = None,
                  mode: str = "auto", max_distance: float | None = None, margin: float | None = None,
                  max_frames: int | None = None) -> dict:
    """Names on the faces of a camera or video in a Qt window with FPS; Q or Esc quits."""
    from datatool.core.faces import DEFAULT_MARGIN

    from . import liveview

    liveview.require_display("to name faces in files instead use `trainer predict RUN INPUT... --out DIR`")
    recognizer = Recognizer(run, mode=mode, threshold=threshold, max_distance=max_distance)
    margin = training_margin(recognizer.config, DEFAULT_MARGIN) if margin is None else margin
    found = open_detector(detector, run=run)

    def step(rgb):
        faces = find_faces(found, rgb, margin=margin, size=recognizer.size)
        answers = recognizer.recognize([c for _, c in faces])
        return annotate(rgb, faces, answers), ", ".join(a.name for a in answers) or "no face"

    return liveview.run(source, f"trainer predict - {Path(run).name}", step, max_frames=max_frames)
