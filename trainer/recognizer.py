"""The recognizer: a trained identity run naming faces - by its softmax over the trained people,
or by the nearest enrolled embedding (`trainer.enroll`) - on face crops, on photos where a face
detector finds every face first, and live. Also `enroll_person` (`trainer enroll`), which finds
and cuts faces the same way before storing their embeddings.

Faces are found by `datatool.core.detect.get_detector` (`--detector haar|mtcnn|RUN`; a detection
run is read by `trainer.detector.RunDetector`, as `trainer predict` reads it) and cut by
`datatool.core.faces.cut_face`, the rule `datatool crop` cut the training faces with.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datatool.core.errors import DatatoolError, OutputExistsError

from . import enroll as E
from .identity import OUTPUT, UNKNOWN, decide, run_labels

MODES = ("auto", "softmax", "enrolled")
DEFAULT_DETECTOR = "mtcnn"  # finds every face in a frame (Haar misses profiles)
FIELDS = ["source", "frame", "face", "width", "height", "name", "score", "distance", "mode", "label",
          "x_min", "y_min", "x_max", "y_max"]


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
        """`(n, classes)` softmax of face crops (any size: resized as the training images were)."""
        from .data import model_input

        return np.asarray(self.model.predict_on_batch(model_input(crops, self.size))[OUTPUT])

    def recognize(self, crops) -> list[Answer]:
        """An `Answer` per face crop, in the recognizer's mode."""
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


def summary(rows: list[dict], *, threshold: float, out: Path) -> str:
    """The line `trainer predict` prints after a recognizer's run over files."""
    from collections import Counter

    names = Counter(r["name"] for r in rows)
    known = ", ".join(f"{n} {c}" for n, c in sorted(names.items()) if n != UNKNOWN) or "nobody known"
    mode_used = rows[0]["mode"] if rows else "no faces"
    return (f"{len(rows)} faces ({mode_used}): {known}; {names.get(UNKNOWN, 0)} unknown; "
            f"wrote {out}/predictions.csv, predictions.json and annotated copies")


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

    from .predict import collect_inputs, refuse_unreadable

    items = collect_inputs(inputs)
    videos = [str(p) for p, _, kind in items if kind == "video"]
    if videos:
        raise DatatoolError(f"{videos[0]}: videos are not supported with a recognizer yet; extract frames "
                            f"(`datatool capture DIR --source {videos[0]}`) and predict on the folder")
    recognizer = Recognizer(run, mode=mode, threshold=threshold, max_distance=max_distance)
    margin = training_margin(recognizer.config, DEFAULT_MARGIN) if margin is None else margin
    found = open_detector(detector, run=run)
    out = prepare_output_dir(Path(out), overwrite=overwrite)
    rows, problems, unreadable = [], [], []
    for path, name, _ in tqdm(items, desc="images", unit="img", disable=not progress):
        try:
            rgb = load_rgb(path)
        except DatatoolError as e:  # a corrupt file is reported, the others go on
            problems.append(str(e))
            unreadable.append(str(e))
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
    refuse_unreadable(unreadable, total=len(items), out=out, rows=rows)
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


def face_crops(paths, *, detector=None, margin: float, size: int, skipped: list[str], progress: bool = True):
    """`[(path, crop)]`: each image whole (`detector=None`: the images are face crops), or its one
    face. An image where the detector finds no face or several (whose is it?) is left out and
    said in `skipped`, as a corrupt file is."""
    from tqdm import tqdm

    from datatool.core.images import load_rgb

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


def enroll_person(run: Path, person: str, inputs, *, overwrite: bool = False, detector: str | None = "none",
                  margin: float | None = None, progress: bool = True) -> dict:
    """Add `person`'s face embeddings from `inputs` (images / folders) to RUN's enrolled store.

    A name already enrolled is refused unless `overwrite` (which replaces that person's
    embeddings, nobody else's). Returns `{person, added, skipped, people, seconds, path}`.
    """
    from datatool.core.faces import DEFAULT_MARGIN

    from .models import load_run
    from .predict import collect_inputs, refuse_unreadable

    t0 = time.perf_counter()
    E.check_person(person)
    items = collect_inputs(inputs)
    videos = [str(p) for p, _, kind in items if kind == "video"]
    if videos:
        raise DatatoolError(f"{videos[0]}: enroll takes images (extract frames with `datatool capture`)")
    model, config = load_run(run)
    run_labels(config, run)
    sha = E.model_sha256(run)
    store = E.load_enrolled(run, model_path=Path(run) / "model.keras")
    if store is not None and person in store.people() and not overwrite:
        raise OutputExistsError(f"{E.store_path(run)}: {person!r} is already enrolled ({store.people()[person]} "
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
    emb = E.embed(E.embedding_model(model), [c for _, c in crops], image_size=size)
    sources = [str(p) for p, _ in crops]
    if store is None:
        store = E.Enrolled(names=np.array([], str), embeddings=np.zeros((0, emb.shape[1]), np.float32),
                           sources=np.array([], str), model_sha256=sha)
    new = store.with_person(person, emb, sources)
    path = E.save_enrolled(run, new)
    return {"person": person, "added": len(crops), "skipped": skipped, "people": new.people(),
            "seconds": time.perf_counter() - t0, "path": str(path)}
