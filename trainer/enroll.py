"""Enrolment without retraining: face embeddings of new people, answered by nearest neighbour.

An embedding is the trained backbone's globally pooled feature map for a face crop, L2-normalized
(the input of the identity head's dense layers). `trainer enroll RUN --person NAME IMAGES...`
stores one per image in `RUN/enrolled.npz`; `trainer predict` then answers with the name of the
nearest stored embedding by cosine distance (`1 - a.b`), or `unknown` when even the nearest is
farther than `max_distance`. Adding a person is one forward pass per image - seconds - and the
softmax head is untouched. Nearest neighbour answers only among enrolled people: enroll the
trained people too when you want them named in this mode.

`RUN/enrolled.npz` holds `names` (n,), `embeddings` (n, d) float32, `sources` (n,) and the
sha256 of the `model.keras` the embeddings came from: a run trained again gives other features,
so a store made with another model is refused rather than silently wrong. It is rewritten
whole under a temporary name and renamed, so Ctrl-C leaves the previous store intact.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datatool.core.errors import DatatoolError, OutputExistsError

STORE = "enrolled.npz"
EMBEDDING = "backbone-gap-l2"
DEFAULT_MAX_DISTANCE = 0.25


@dataclass(frozen=True)
class Enrolled:
    """The enrolled faces of a run: `names[i]` is the person of `embeddings[i]` (L2-normalized)."""

    names: np.ndarray
    embeddings: np.ndarray
    sources: np.ndarray
    model_sha256: str

    def __post_init__(self):
        if self.embeddings.ndim != 2 or not len(self.names) == len(self.embeddings) == len(self.sources):
            raise ValueError(f"Enrolled: expected names (n,), embeddings (n, d), sources (n,), got "
                             f"{self.names.shape}, {self.embeddings.shape}, {self.sources.shape}")

    def people(self) -> dict[str, int]:
        """Images enrolled per person, in enrolment order."""
        counts: dict[str, int] = {}
        for n in self.names.tolist():
            counts[n] = counts.get(n, 0) + 1
        return counts


def store_path(run: Path) -> Path:
    return Path(run) / STORE


def model_sha256(run: Path) -> str:
    from datatool.core.images import sha256_file

    path = Path(run) / "model.keras"
    if not path.is_file():
        raise DatatoolError(f"{run}: no model.keras (the fit did not finish)")
    return sha256_file(path)


def load_enrolled(run: Path, *, model_path: Path | None = None) -> Enrolled | None:
    """The run's enrolled store, or None when nobody is enrolled. Checks it matches the run's
    `model.keras` (pass `model_path` to check, which hashes the model file)."""
    path = store_path(run)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            store = Enrolled(names=z["names"].astype(str), embeddings=z["embeddings"].astype(np.float32),
                             sources=z["sources"].astype(str), model_sha256=str(z["model_sha256"]))
            kind = str(z["embedding"])
    except (OSError, KeyError, ValueError) as e:
        raise DatatoolError(f"{path}: unreadable enrolment store ({e}); move it away and enroll again") from e
    if kind != EMBEDDING:
        raise DatatoolError(f"{path}: embedding: {kind!r} is not {EMBEDDING!r} (made by another facekit version)")
    if model_path is not None and store.model_sha256 != model_sha256(Path(model_path).parent):
        raise DatatoolError(f"{path}: model_sha256: these embeddings were made with another model.keras (the "
                            f"run was trained again); move the file away and enroll everyone again")
    return store


def save_enrolled(run: Path, store: Enrolled) -> Path:
    """Write the whole store atomically (temporary name, then rename)."""
    from datatool.core.fsutil import write_bytes_atomic

    buf = io.BytesIO()
    np.savez(buf, names=store.names.astype(str), embeddings=store.embeddings.astype(np.float32),
             sources=store.sources.astype(str), model_sha256=np.array(store.model_sha256),
             embedding=np.array(EMBEDDING))
    path = store_path(run)
    write_bytes_atomic(path, buf.getvalue())
    return path


def embedding_model(model):
    """`image (0-255 RGB) -> preprocess -> backbone -> global average pool`, sharing the trained
    model's layers (no copy of the weights)."""
    import keras

    image = keras.Input(tuple(model.input_shape[1:]), name="image")
    x = model.get_layer("preprocess")(image)
    feats = model.get_layer("backbone")(x, training=False)
    pooled = keras.layers.GlobalAveragePooling2D(name="embedding")(feats)
    return keras.Model(image, pooled, name="facekit_embedding")


def normalize(x) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def embed(embedder, crops, *, image_size: int, batch_size: int = 32) -> np.ndarray:
    """`(n, d)` L2-normalized embeddings of RGB crops (any size: resized like the training images)."""
    import tensorflow as tf

    from .data import resize_images

    out = []
    for start in range(0, len(crops), batch_size):
        batch = tf.stack([resize_images(np.asarray(c), image_size) for c in crops[start:start + batch_size]])
        out.append(np.asarray(embedder.predict_on_batch(batch)))
    return normalize(np.concatenate(out)) if out else np.zeros((0, 0), np.float32)


def nearest(store: Enrolled, queries) -> list[tuple[str, float]]:
    """`(name, cosine distance)` of the nearest enrolled embedding for each L2-normalized query."""
    q = np.asarray(queries, np.float32)
    if not len(q):
        return []
    if q.shape[1] != store.embeddings.shape[1]:
        raise DatatoolError(f"embeddings of size {q.shape[1]} cannot be compared with the enrolled ones "
                            f"({store.embeddings.shape[1]})")
    dist = 1.0 - q @ store.embeddings.T
    best = dist.argmin(axis=1)
    return [(str(store.names[k]), float(max(0.0, dist[i, k]))) for i, k in enumerate(best)]


def check_person(person: str) -> str:
    from datatool.core.faces import person_name_problem

    from .identity import UNKNOWN

    why = person_name_problem(person or "")
    if why:
        raise DatatoolError(f"--person: {person!r} is not usable as a name ({why})")
    if person.strip().lower() == UNKNOWN:
        raise DatatoolError(f"--person: {person!r} is the answer for nobody known; choose another name")
    return person


def face_crops(paths, *, detector=None, margin: float, size: int, skipped: list[str], progress: bool = True):
    """`[(path, crop)]`: each image whole (`detector=None`: the images are face crops), or its one
    face. An image where the detector finds no face or several (whose is it?) is left out and
    said in `skipped`, as a corrupt file is."""
    from tqdm import tqdm

    from datatool.core.images import load_rgb

    from .identity import find_faces

    out = []
    for p in tqdm(paths, desc="faces", unit="img", disable=not progress):
        try:
            rgb = load_rgb(p)
        except DatatoolError as e:
            skipped.append(str(e))
            continue
        faces = find_faces(detector, rgb, margin=margin, size=size)
        if len(faces) != 1:
            skipped.append(f"{p}: {'no face' if not faces else f'{len(faces)} faces'} found "
                           f"({'skipped' if not faces else 'skipped: whose is it?'})")
            continue
        out.append((Path(p), faces[0][1]))
    return out


def enroll(run: Path, person: str, inputs, *, overwrite: bool = False, detector: str | None = "none",
           margin: float | None = None, progress: bool = True) -> dict:
    """Add `person`'s face embeddings from `inputs` (images / folders) to RUN's enrolled store.

    A name already enrolled is refused unless `overwrite` (which replaces that person's
    embeddings, nobody else's). Returns `{person, added, skipped, people, seconds, path}`.
    """
    from datatool.core.faces import DEFAULT_MARGIN

    from .identity import open_detector, run_labels, training_margin
    from .models import load_run
    from .predict import collect_inputs

    t0 = time.perf_counter()
    check_person(person)
    items = collect_inputs(inputs)
    videos = [str(p) for p, _, kind in items if kind == "video"]
    if videos:
        raise DatatoolError(f"{videos[0]}: enroll takes images (extract frames with `datatool capture`)")
    model, config = load_run(run)
    run_labels(config, run)
    sha = model_sha256(run)
    store = load_enrolled(run, model_path=Path(run) / "model.keras")
    if store is not None and person in store.people() and not overwrite:
        raise OutputExistsError(f"{store_path(run)}: {person!r} is already enrolled ({store.people()[person]} "
                                f"images); use --overwrite to replace their faces")
    found = open_detector(detector, run=run)
    size = int(config["image_size"])
    margin = training_margin(config, DEFAULT_MARGIN) if margin is None else margin
    skipped: list[str] = []
    crops = face_crops([p for p, _, _ in items], detector=found, margin=margin, size=size, skipped=skipped,
                       progress=progress)
    if not crops:
        raise DatatoolError(f"--person {person}: no usable face in {', '.join(map(str, inputs))}"
                            + (f" ({skipped[0]})" if skipped else ""))
    emb = embed(embedding_model(model), [c for _, c in crops], image_size=size)
    names = np.array([person] * len(crops))
    sources = np.array([str(p) for p, _ in crops])
    if store is not None:
        keep = store.names != person
        names = np.concatenate([store.names[keep], names])
        emb = np.concatenate([store.embeddings[keep], emb])
        sources = np.concatenate([store.sources[keep], sources])
    new = Enrolled(names=names, embeddings=emb, sources=sources, model_sha256=sha)
    path = save_enrolled(run, new)
    return {"person": person, "added": len(crops), "skipped": skipped, "people": new.people(),
            "seconds": time.perf_counter() - t0, "path": str(path)}


def compare_on_split(run: Path, tfdir: Path, *, enroll_split: str = "train", test_split: str = "test",
                     batch_size: int = 32) -> dict:
    """Softmax head vs nearest enrolled embedding on the same records: every image of
    `enroll_split` is enrolled under its label (in memory; RUN is not touched), then each image of
    `test_split` is classified both ways. Returns both accuracies and the counts."""
    from .identity import OUTPUT, run_labels
    from .models import load_run
    from . import data as tdata

    model, config = load_run(run)
    labels = run_labels(config, run)
    size = int(config["image_size"])
    embedder = embedding_model(model)

    def pass_over(split):
        ds = tdata.make_dataset(tfdir, split, image_size=size, batch_size=batch_size, task="identity",
                                num_classes=len(labels))
        embs, probs, ys = [], [], []
        for images, targets in ds:
            embs.append(np.asarray(embedder.predict_on_batch(images)))
            probs.append(np.asarray(model.predict_on_batch(images)[OUTPUT]))
            ys.append(np.asarray(targets[OUTPUT]).argmax(axis=1))
        return normalize(np.concatenate(embs)), np.concatenate(probs), np.concatenate(ys)

    t0 = time.perf_counter()
    e_emb, _, e_y = pass_over(enroll_split)
    enroll_seconds = time.perf_counter() - t0
    store = Enrolled(names=np.array(labels)[e_y], embeddings=e_emb, sources=np.array([""] * len(e_y)),
                     model_sha256="")
    t_emb, t_probs, t_y = pass_over(test_split)
    answers = nearest(store, t_emb)
    enrolled_pred = np.array([labels.index(n) for n, _ in answers])
    dists = np.array([d for _, d in answers])
    right = enrolled_pred == t_y
    return {"images": int(len(t_y)), "enrolled_images": int(len(e_y)), "enroll_split": enroll_split,
            "test_split": test_split, "softmax_accuracy": float((t_probs.argmax(axis=1) == t_y).mean()),
            "enrolled_accuracy": float(right.mean()), "enroll_seconds": enroll_seconds,
            "distance_right_median": float(np.median(dists[right])) if right.any() else None,
            "distance_wrong_median": float(np.median(dists[~right])) if (~right).any() else None}
