"""`trainer predict`: a trained detector on images, folders, video files, or a live camera.

Outputs in OUT: annotated copies (`annotated/<name>.jpg`; a video becomes `<name>.annotated.mp4`),
`predictions.csv` and `predictions.json` (one row per image or video frame: how many faces score at
least `--threshold`, the best face's score and box in pixels; the JSON lists every such face under
`detections`). The faces come from
`trainer.detector.RunDetector`, the detector `datatool prelabel --detector RUN` uses too; every
face at or above `--threshold` is drawn.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np

from datatool.core.errors import DatatoolError
from datatool.core.fsutil import prepare_output_dir, write_text_atomic
from datatool.core.images import is_image

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}
FIELDS = ["source", "frame", "width", "height", "faces", "score", "face", "x_min", "y_min", "x_max", "y_max"]


def collect_inputs(inputs) -> list[tuple[Path, str, str]]:
    """`(path, output name, kind)` for every image/video in files and folders (recursive);
    kind is 'image' or 'video'. Output names keep folder structure and never collide."""
    items, used = [], set()
    for raw in inputs:
        p = Path(raw)
        if not p.exists():
            raise DatatoolError(f"{p}: no such file or folder")
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and (is_image(q) or q.suffix.lower() in VIDEO_EXTENSIONS)
                           and not any(part.startswith(".") for part in q.relative_to(p).parts))
            pairs = [(q, (Path(p.name) / q.relative_to(p)).as_posix()) for q in found]
        elif is_image(p) or p.suffix.lower() in VIDEO_EXTENSIONS:
            pairs = [(p, p.name)]
        else:
            raise DatatoolError(f"{p}: not an image or a video file (by its extension)")
        for q, name in pairs:
            stem, k = name, 1
            while name in used:
                k += 1
                name = f"{Path(stem).with_suffix('')}_{k}{Path(stem).suffix}"
            used.add(name)
            items.append((q, name, "video" if q.suffix.lower() in VIDEO_EXTENSIONS else "image"))
    if not items:
        raise DatatoolError(f"no images or videos in {', '.join(map(str, inputs))}")
    return items


def _caption(score: float) -> str:
    return f"face {score:.2f}"


def annotate(rgb, dets, *, threshold: float):
    """A copy of `rgb` with every detection at or above `threshold` drawn (`rgb` itself if none)."""
    from datatool.core.draw import draw_boxes

    shown = [d for d in dets if d.score >= threshold]
    if not shown:
        return rgb
    return draw_boxes(rgb, [d.box.xyxy for d in shown], captions=[_caption(d.score) for d in shown])


def _row(source: str, frame, rgb, dets, threshold) -> dict:
    """One row per image or frame: how many faces score at least `threshold`, its best face
    (score 0 and an empty box when the model proposes none), and every face found under
    `detections` (score, box in pixels)."""
    h, w = rgb.shape[:2]
    score, box = (dets[0].score, dets[0].box.xyxy) if dets else (0.0, (0.0, 0.0, 0.0, 0.0))
    found = [d for d in dets if d.score >= threshold]
    return {"source": source, "frame": frame, "width": w, "height": h, "faces": len(found),
            "score": round(score, 6), "face": bool(found), "x_min": round(box[0], 2), "y_min": round(box[1], 2),
            "x_max": round(box[2], 2), "y_max": round(box[3], 2),
            "detections": [{"score": round(d.score, 6), "box": [round(v, 2) for v in d.box.xyxy]} for d in found]}


def predict_paths(run: Path, inputs, *, out: Path, threshold: float = 0.5, overwrite: bool = False,
                  batch_size: int = 16, progress: bool = True) -> list[dict]:
    """Predict every image/video under `inputs`, write annotated copies and the tables into `out`."""
    from tqdm import tqdm

    from datatool.core.draw import save_rgb
    from datatool.core.images import load_rgb

    from .detector import RunDetector

    items = collect_inputs(inputs)
    out = prepare_output_dir(Path(out), overwrite=overwrite)
    detector = RunDetector(run, threshold=0.0)  # every proposal: the rows show scores below --threshold too
    rows, problems = [], []
    images = [(p, n) for p, n, k in items if k == "image"]
    bar = tqdm(total=len(images), desc="images", unit="img", disable=not progress or not images)
    for start in range(0, len(images), batch_size):
        chunk = []
        for p, name in images[start:start + batch_size]:
            try:
                chunk.append((p, name, load_rgb(p)))
            except DatatoolError as e:  # a corrupt file is reported, the others go on
                problems.append(str(e))
        for (p, name, rgb), dets in zip(chunk, detector.detect_many([c[2] for c in chunk])):
            save_rgb(out / "annotated" / Path(name).with_suffix(".jpg"), annotate(rgb, dets, threshold=threshold))
            rows.append(_row(str(p), None, rgb, dets, threshold))
        bar.update(len(images[start:start + batch_size]))
    bar.close()
    for p, name, kind in items:
        if kind == "video":
            rows.extend(predict_video(detector, p, out / Path(name).with_suffix(".annotated.mp4"),
                                      threshold=threshold, batch_size=batch_size, progress=progress))
    write_tables(rows, out)
    if problems:
        write_text_atomic(out / "problems.txt", "\n".join(problems) + "\n")
    refuse_unreadable(problems, total=len(images), out=out, rows=rows)
    return rows


class UnreadableImages(DatatoolError):
    """Some input images could not be decoded; `rows` holds the predictions made for the others
    (written already), so the CLI can print its summary before the error."""

    def __init__(self, message: str, rows: list[dict]):
        super().__init__(message)
        self.rows = rows


def refuse_unreadable(unreadable: list[str], *, total: int, out: Path, rows: list[dict]) -> None:
    """After the readable images are predicted and written: `UnreadableImages` (exit 1) naming
    the first image that could not be decoded, and how many, if any - a corrupt or truncated
    file is never passed over in silence."""
    if unreadable:
        more = f" (and {len(unreadable) - 1} more)" if len(unreadable) > 1 else ""
        raise UnreadableImages(f"{unreadable[0]}{more}; {len(unreadable)} of {total} images could not be read and "
                               f"were skipped (listed in {Path(out) / 'problems.txt'})", rows)


def predict_video(detector, path: Path, dest: Path, *, threshold: float, batch_size: int = 16,
                  progress: bool = True) -> list[dict]:
    """Annotate every frame of a video into `dest` (mp4, written under a temporary name);
    `detector` a `RunDetector` (threshold 0: every proposal reaches the rows)."""
    import cv2
    from tqdm import tqdm

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DatatoolError(f"{path}: cannot open video (unsupported codec or corrupt file)")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) or None
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".tmp-{os.getpid()}-{dest.name}")
    writer = None
    rows, index = [], 0
    bar = tqdm(total=total, desc=path.name, unit="frame", disable=not progress)
    try:
        while True:
            frames = []
            while len(frames) < batch_size:
                ok, bgr = cap.read()
                if not ok:
                    break
                frames.append(np.ascontiguousarray(bgr[:, :, ::-1]))
            if not frames:
                break
            for rgb, dets in zip(frames, detector.detect_many(frames)):
                if writer is None:
                    h, w = rgb.shape[:2]
                    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                    if not writer.isOpened():
                        raise DatatoolError(f"{dest}: cannot write video (OpenCV has no mp4v encoder here)")
                writer.write(np.ascontiguousarray(annotate(rgb, dets, threshold=threshold)[:, :, ::-1]))
                rows.append(_row(str(path), index, rgb, dets, threshold))
                index += 1
            bar.update(len(frames))
        if writer is None:
            raise DatatoolError(f"{path}: no frames could be read")
        writer.release()
        writer = None
        os.replace(tmp, dest)
    finally:
        bar.close()
        cap.release()
        if writer is not None:
            writer.release()
        if tmp.exists():
            tmp.unlink()
    return rows


def write_tables(rows: list[dict], out: Path) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r[k] is None else r[k]) for k in FIELDS})
    write_text_atomic(Path(out) / "predictions.csv", buf.getvalue())
    write_text_atomic(Path(out) / "predictions.json", json.dumps(rows, indent=1) + "\n")


def summary(rows: list[dict], *, threshold: float, out: Path) -> str:
    """The line `trainer predict` prints after a detector's run over files."""
    with_face = sum(r["face"] for r in rows)
    faces = sum(r["faces"] for r in rows)
    return (f"{len(rows)} images/frames, {with_face} with a face, {faces} faces in all (score >= {threshold:g}); "
            f"wrote {out}/predictions.csv, predictions.json and annotated copies")


def live(run: Path, source: str, *, threshold: float = 0.5, max_frames: int | None = None) -> dict:
    """Boxes and FPS on a camera (index or device path) or a video, in a Qt window; Q or Esc quits."""
    from . import liveview
    from .detector import RunDetector

    liveview.require_display("to annotate files instead use `trainer predict RUN INPUT... --out DIR`")
    detector = RunDetector(run, threshold=0.0)

    def step(rgb):
        dets = detector.detect(rgb)
        faces = sum(d.score >= threshold for d in dets)
        return annotate(rgb, dets, threshold=threshold), f"{faces} face{'s' * (faces != 1)}"

    return liveview.run(source, f"trainer predict - {Path(run).name}", step, max_frames=max_frames)
