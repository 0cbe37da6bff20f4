"""Capture frames from a camera, a video file, a stream URL or a folder into a dataset.

Frames go to `DATASET/images/<session>_<nnnn>.jpg` (or, with `person` and `crop_faces`, the
face crop alone to `DATASET/people/NAME/`). Names are checked before writing and files are
written under a temporary name and renamed, so nothing is ever overwritten and an interrupted
capture (Ctrl-C) keeps every frame already written and no partial one.

`interval` is media time for a video file (frame index / fps: a 10 s clip at 0.5 gives 20
frames however fast it is decoded) and wall-clock time for a camera or stream.

The capture session is stamped into each JPEG it writes, as a JPEG comment (COM segment)
`facekit:{"session": ..., "source": ..., "time": ..., "person": ...}`. It lives in the image
itself, so it survives renames and moves, and capture creates no JSON (an image with no JSON
is *unlabeled*; an empty JSON would claim "no face"). `capture_info(path)` / `session_of(path)`
read it back; `prelabel` copies it into the labelme JSON's `facekit` object, where
`split --group-by session` finds it. Each run is also listed under `captures` in
`DATASET/dataset.json`.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .core.errors import DatatoolError
from .core.faces import DEFAULT_MARGIN, DEFAULT_SIZE, cut_face
from .core.provenance import new_session_id, stamp_jpeg
from .core.issues import Issue

DEFAULT_CAMERA_SIZE = (640, 480)
OPEN_TIMEOUT_S = 2.0
STREAM_TIMEOUT_MS = 5000
MAX_READ_FAILURES = 25  # consecutive failed camera reads before giving up


# --------------------------------------------------------------------------- sources

def parse_size(text: str) -> tuple[int, int]:
    """`"640x480"` -> (640, 480)."""
    try:
        w, h = (int(v) for v in str(text).lower().replace("*", "x").split("x"))
    except ValueError as e:
        raise DatatoolError(field="--size", reason=f"expected WIDTHxHEIGHT like 640x480, got {text!r}") from e
    if w <= 0 or h <= 0:
        raise DatatoolError(field="--size", reason=f"expected positive WIDTHxHEIGHT, got {text!r}")
    return w, h


@dataclass(frozen=True)
class Frame:
    """One frame from a source: RGB uint8 pixels, its time in seconds (media time for a video
    file, wall time since the source opened for a camera/stream, the index for a folder) and a
    short name of where it came from."""

    rgb: object
    time_s: float
    origin: str


def _in_thread(fn, timeout: float):
    """Run `fn()` in a daemon thread; (finished, result). A hung driver cannot hang us."""
    box: dict = {}

    def work():
        try:
            box["value"] = fn()
        except BaseException as e:  # re-raised in the caller's thread
            box["error"] = e

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        return False, None
    if "error" in box:
        raise box["error"]
    return True, box.get("value")


class Source:
    """Where frames come from. `live` sources (camera, stream) use wall time and a countdown."""

    kind = "source"
    live = False

    def __init__(self, spec: str) -> None:
        self.spec = spec

    def frames(self) -> Iterator[Frame]:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __str__(self) -> str:
        return f"{self.kind} {self.spec}"


class FolderSource(Source):
    """Images in a folder (recursively), in sorted order; unreadable ones are reported and skipped."""

    kind = "folder"

    def __init__(self, spec: str, *, issues: list[Issue]) -> None:
        from .core.images import is_image

        super().__init__(spec)
        root = Path(spec)
        if root.is_file():
            self.paths = [root]
        else:
            self.paths = sorted((p for p in root.rglob("*") if p.is_file() and is_image(p)
                                 and not any(part.startswith(".") for part in p.relative_to(root).parts)),
                                key=lambda p: p.relative_to(root).as_posix())
        if not self.paths:
            raise DatatoolError(f"source {spec!r}: no images found in this folder")
        self.issues = issues

    def frames(self) -> Iterator[Frame]:
        from .core.errors import ImageError
        from .core.images import load_rgb

        for k, path in enumerate(self.paths):
            try:
                rgb = load_rgb(path)
            except ImageError as e:
                self.issues.append(Issue.from_error(e, severity="warning", prefix="skipped: ", code="bad-image"))
                continue
            yield Frame(rgb, float(k), path.name)


class VideoSource(Source):
    """A camera index, a video file or a stream URL through `cv2.VideoCapture`."""

    def __init__(self, spec: str, *, kind: str, size: tuple[int, int] | None) -> None:
        import cv2

        super().__init__(spec)
        self.kind = kind
        self.live = kind in ("camera", "stream")
        if kind == "camera":
            target = int(spec) if spec.isdigit() else spec
            opener = lambda: cv2.VideoCapture(target)  # noqa: E731
        elif kind == "stream":
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS]
            opener = lambda: cv2.VideoCapture(spec, cv2.CAP_FFMPEG, params)  # noqa: E731
        else:
            opener = lambda: cv2.VideoCapture(spec)  # noqa: E731
        timeout = OPEN_TIMEOUT_S if kind == "camera" else STREAM_TIMEOUT_MS / 1000 + 1
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # our message says it better
        try:
            done, cap = _in_thread(opener, timeout)
        finally:
            cv2.utils.logging.setLogLevel(level)
        if not done or cap is None or not cap.isOpened():
            raise DatatoolError(self._cannot_open("timed out" if not done else "cannot be opened"))
        self.cap = cap
        if kind == "camera":
            w, h = size or DEFAULT_CAMERA_SIZE
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, w)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, h)
        # The first frame proves the source works; a driver that opens but never delivers fails here.
        done, first = _in_thread(cap.read, timeout)
        if not done or not first or not first[0] or first[1] is None:
            cap.release()
            raise DatatoolError(self._cannot_open("opened but delivered no frame"))
        self._first = first[1]
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and math.isfinite(fps) and 0 < fps < 1000 else 0.0

    def _cannot_open(self, why: str) -> str:
        if self.kind == "camera":
            return (f"camera {self.spec} {why}: check that it is connected and not used by another program, "
                    f"and that you may use it (Linux: be in the 'video' group); try another index "
                    f"(--source 1), or capture from a file: --source path/to/video.mp4 or --source path/to/folder")
        if self.kind == "stream":
            return f"stream {self.spec} {why}: check the URL and that the stream is live"
        return (f"video {self.spec} {why}: not a video OpenCV can decode "
                f"(try converting it: ffmpeg -i {self.spec} out.mp4)")

    def frames(self) -> Iterator[Frame]:
        import cv2

        first, self._first = self._first, None
        if self.live:
            start = time.monotonic()
            if first is not None:
                yield Frame(cv2.cvtColor(first, cv2.COLOR_BGR2RGB), 0.0, self.spec)
            failures = 0
            while True:
                ok, bgr = self.cap.read()
                if not ok or bgr is None:
                    failures += 1
                    if failures >= MAX_READ_FAILURES:
                        return
                    time.sleep(0.02)
                    continue
                failures = 0
                yield Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), time.monotonic() - start, self.spec)
        else:
            index = 0
            if first is not None:
                yield Frame(cv2.cvtColor(first, cv2.COLOR_BGR2RGB), 0.0, f"{Path(self.spec).name}@0")
            while True:
                # grab() without retrieve() skips decoding the frames the interval leaves out
                if not self.cap.grab():
                    return
                index += 1
                t = self._media_time(index)
                yield _LazyFrame(self.cap, t, f"{Path(self.spec).name}@{index}")

    def _media_time(self, index: int) -> float:
        import cv2

        if self.fps:
            return index / self.fps
        return max(0.0, self.cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0)

    def close(self) -> None:
        cap = getattr(self, "cap", None)
        if cap is not None:
            cap.release()


class _LazyFrame:
    """A grabbed video frame decoded only if used (`.rgb`)."""

    def __init__(self, cap, time_s: float, origin: str) -> None:
        self._cap, self.time_s, self.origin, self._rgb = cap, time_s, origin, None

    @property
    def rgb(self):
        import cv2

        if self._rgb is None:
            ok, bgr = self._cap.retrieve()
            if not ok or bgr is None:
                raise DatatoolError(f"video frame {self.origin}: cannot be decoded")
            self._rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return self._rgb


def source_kind(spec: str) -> str:
    """'camera' (an index or /dev/video*), 'stream' (a URL), 'folder' or 'video' (a file)."""
    from .core.images import is_image

    spec = str(spec)
    if spec.isdigit() or spec.startswith("/dev/video"):
        return "camera"
    if "://" in spec:
        return "stream"
    path = Path(spec)
    if path.is_dir() or (path.is_file() and is_image(path)):
        return "folder"
    if path.is_file():
        return "video"
    raise DatatoolError(f"source {spec!r}: no such file or folder (a camera is a number like --source 0, "
                        f"a stream a URL like rtsp://...)")


def open_source(spec: str, *, size: tuple[int, int] | None = None, issues: list[Issue] | None = None) -> Source:
    """Open a `--source` value; fails within a couple of seconds with a message saying what to try."""
    kind = source_kind(spec)
    if kind == "folder":
        return FolderSource(str(spec), issues=issues if issues is not None else [])
    return VideoSource(str(spec), kind=kind, size=size)


# --------------------------------------------------------------------------- capture

class Schedule:
    """Which frames to keep: after `countdown` seconds, the first frame of each `interval` slot.

    Slots lie on a fixed grid (0, interval, 2*interval, ... after the countdown), so a slow read
    never drifts the schedule; `every=True` keeps every frame (folders); interval 0 keeps all.
    """

    def __init__(self, interval: float, *, countdown: float = 0.0, every: bool = False) -> None:
        self.interval, self.countdown, self.every = float(interval), float(countdown), every
        self._next = 0.0

    def offer(self, t: float) -> tuple[str, float]:
        """For a frame at time `t` (seconds): `("countdown", seconds left)`, `("skip", t)` or
        `("take", t)` with `t` counted from the end of the countdown."""
        if self.every:
            return "take", t
        if t < self.countdown:
            return "countdown", self.countdown - t
        t -= self.countdown
        if t + 1e-6 < self._next:
            return "skip", t
        self._next = (math.floor(t / self.interval + 1e-6) + 1) * self.interval if self.interval > 0 else t
        return "take", t


def _fit_within(rgb, size: tuple[int, int] | None):
    import cv2

    if size is None:
        return rgb
    h, w = rgb.shape[:2]
    s = min(size[0] / w, size[1] / h)
    if s >= 1:
        return rgb
    return cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def target_images_dir(root: Path) -> Path:
    """Where capture writes frames: `root/images`, or `root` itself if it is a bare image folder."""
    from .dataset import IMAGES
    from .core.images import is_image

    root = Path(root)
    if root.is_dir() and not (root / IMAGES).exists() and any(p.is_file() and is_image(p) for p in root.iterdir()):
        return root
    return root / IMAGES


@dataclass
class CaptureResult:
    """What a capture did. `written` lists the files in the order they were written."""

    session: str
    source: str
    out_dir: Path
    written: list[Path] = field(default_factory=list)
    frames_seen: int = 0
    no_face: int = 0
    many_faces: int = 0
    interrupted: bool = False
    stopped_by_user: bool = False
    source_ended: bool = False
    preview_note: str = ""
    issues: list[Issue] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return self.no_face + self.many_faces


def _next_free(folder: Path, session: str, counter: int) -> tuple[Path, int]:
    while True:
        counter += 1
        path = folder / f"{session}_{counter:04d}.jpg"
        if not path.exists() and not path.with_suffix(".json").exists():
            return path, counter


def _record_session(root: Path, entry: dict) -> None:
    from .core.fsutil import command_line, read_record, write_json_atomic, write_record

    record = read_record(root)
    if record is None:
        write_record(root, command=command_line(), captures=[entry])
    else:
        record.setdefault("captures", []).append(entry)
        write_json_atomic(Path(root) / "dataset.json", record)


def capture(root: Path, *, source: str = "0", count: int = 150, interval: float = 0.5,
            countdown: float = 3.0, size: tuple[int, int] | None = None, quality: int = 95,
            preview: bool | None = None, person: str | None = None, crop_faces: bool = False,
            detector: str = "haar", margin: float = DEFAULT_MARGIN, crop_size: int = DEFAULT_SIZE,
            progress: bool = True, session: str | None = None) -> CaptureResult:
    """Grab up to `count` frames (0 = until the source ends) from `source` into dataset `root`.

    See the module docstring for names, timing and the session stamp. Ctrl-C stops cleanly:
    the result has `interrupted=True` and lists every frame written before it.
    """
    from tqdm import tqdm

    from .core.fsutil import write_bytes_atomic
    from .core.images import encode_jpeg
    from .core.qtview import open_preview

    if count < 0:
        raise DatatoolError(f"--count: expected 0 (no limit) or more, got {count}")
    if interval < 0 or not math.isfinite(interval):
        raise DatatoolError(f"--interval: expected seconds >= 0, got {interval}")
    if not 1 <= quality <= 100:
        raise DatatoolError(f"--quality: expected 1..100, got {quality}")
    if crop_faces and not person:
        raise DatatoolError("--crop-faces needs --person NAME (crops go to DATASET/people/NAME/)")
    if person is not None and (not person.strip() or any(c in person for c in '/\\:*?"<>|') or person.startswith(".")):
        raise DatatoolError(f"--person: {person!r} is not usable as a folder name")
    if crop_faces and (margin < 0 or crop_size < 16):
        raise DatatoolError("--margin must be >= 0 and --crop-size >= 16")

    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DatatoolError(f"{root}: not a folder (a dataset is a folder with images/ inside)")
    det = None
    if crop_faces:
        from .core.detect import get_detector

        det = get_detector(detector)  # fail on a bad --detector before opening the camera
    issues: list[Issue] = []
    src = open_source(str(source), size=size, issues=issues)
    session = session or new_session_id()
    out_dir = root / "people" / person if crop_faces else target_images_dir(root)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = CaptureResult(session=session, source=str(src), out_dir=out_dir, issues=issues)
    window, result.preview_note = open_preview(preview, title=f"facekit capture - {src}")
    bar = tqdm(total=count or None, unit="frame", desc="capture", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)
    counter = 0
    schedule = Schedule(interval, countdown=countdown if src.live else 0.0, every=src.kind == "folder")
    last_announced = None
    try:
        for frame in src.frames():
            result.frames_seen += 1
            if window is not None and not window.poll():
                result.stopped_by_user = True
                break
            action, t = schedule.offer(frame.time_s)
            if action == "countdown":
                left = math.ceil(t)
                if window is not None:
                    window.show(frame.rgb, big=str(left), corner=f"0/{count or '-'}")
                elif left != last_announced:
                    print(f"starting in {left}...", file=sys.stderr, flush=True)
                last_announced = left
                continue
            if action == "skip":
                if window is not None and src.live:
                    window.show(frame.rgb, corner=f"{len(result.written)}/{count or '-'}")
                continue
            rgb = _fit_within(frame.rgb, size if src.kind != "camera" else None)
            info = {"session": session, "source": str(src), "time": round(float(t), 3)}
            if person:
                info["person"] = person
            if det is not None:
                faces = det.detect(rgb)
                if len(faces) != 1:
                    if faces:
                        result.many_faces += 1
                    else:
                        result.no_face += 1
                    if window is not None:
                        window.show(rgb, corner=f"{len(result.written)}/{count or '-'}  "
                                                f"({len(faces)} faces: skipped)")
                    continue
                rgb = cut_face(rgb, faces[0].box, margin=margin, size=crop_size)[0]
            data = stamp_jpeg(encode_jpeg(rgb, quality=quality), info)
            path, counter = _next_free(out_dir, session, counter)
            write_bytes_atomic(path, data, overwrite=False)
            result.written.append(path)
            bar.update(1)
            if window is not None:
                window.show(rgb if det is not None else frame.rgb, corner=f"{len(result.written)}/{count or '-'}")
            if count and len(result.written) >= count:
                break
        else:
            result.source_ended = True
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        bar.close()
        src.close()
        if window is not None:
            window.close()
    if result.written:
        entry = {"session": session, "source": str(src), "frames": len(result.written),
                 "folder": out_dir.relative_to(root).as_posix() if out_dir.is_relative_to(root) else str(out_dir),
                 "interval": interval}
        if person:
            entry["person"] = person
        try:
            _record_session(root, entry)
        except KeyboardInterrupt:
            result.interrupted = True
    return result
