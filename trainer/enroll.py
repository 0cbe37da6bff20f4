"""The embeddings store: enrolled faces of a recognizer run, their embeddings, and the nearest one.

An embedding is the trained backbone's globally pooled feature map for a face crop, L2-normalized
(the input of the identity head's dense layers). `trainer enroll RUN --person NAME IMAGES...`
(`trainer.recognizer.enroll_person`, which finds and cuts the faces) stores one per image in
`RUN/enrolled.npz`; the recognizer then answers with the name of the nearest stored embedding by
cosine distance (`1 - a.b`), or `unknown` when even the nearest is farther than `max_distance`.
Adding a person is one forward pass per image - seconds - and the softmax head is untouched.
Nearest neighbour answers only among enrolled people: enroll the trained people too when you
want them named in this mode.

`RUN/enrolled.npz` holds `names` (n,), `embeddings` (n, d) float32, `sources` (n,) and the
sha256 of the `model.keras` the embeddings came from: a run trained again gives other features,
so a store made with another model is refused rather than silently wrong. It is rewritten
whole under a temporary name and renamed, so Ctrl-C leaves the previous store intact.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from datatool.core.errors import DatatoolError

from .identity import OUTPUT, UNKNOWN, one_hot_targets, run_labels

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

    def with_person(self, person: str, embeddings, sources) -> "Enrolled":
        """A new store where `person`'s faces are `embeddings` (`(n, d)`, from `sources`), the
        other people's kept as they were."""
        keep = self.names != person
        emb = np.asarray(embeddings, np.float32)
        return replace(self, names=np.concatenate([self.names[keep], np.array([person] * len(emb))]),
                       embeddings=np.concatenate([self.embeddings[keep], emb]),
                       sources=np.concatenate([self.sources[keep], np.array([str(s) for s in sources])]))


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
    from .data import model_input

    out = []
    for start in range(0, len(crops), batch_size):
        batch = model_input(crops[start:start + batch_size], image_size)
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
    """`person` if usable as an enrolled name (a person-folder name that is not `unknown`)."""
    from datatool.core.faces import person_name_problem

    why = person_name_problem(person or "")
    if why:
        raise DatatoolError(f"--person: {person!r} is not usable as a name ({why})")
    if person.strip().lower() == UNKNOWN:
        raise DatatoolError(f"--person: {person!r} is the answer for nobody known; choose another name")
    return person


def compare_on_split(run: Path, tfdir: Path, *, enroll_split: str = "train", test_split: str = "test",
                     batch_size: int = 32) -> dict:
    """Softmax head vs nearest enrolled embedding on the same records: every image of
    `enroll_split` is enrolled under its label (in memory; RUN is not touched), then each image of
    `test_split` is classified both ways. Returns both accuracies and the counts."""
    from . import data as tdata
    from .models import load_run

    model, config = load_run(run)
    labels = run_labels(config, run)
    size = int(config["image_size"])
    embedder = embedding_model(model)

    def pass_over(split):
        ds = tdata.make_dataset(tfdir, split, image_size=size, batch_size=batch_size,
                                targets=one_hot_targets(len(labels)))
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
