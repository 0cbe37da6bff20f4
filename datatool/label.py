"""Labelling: `prelabel` (a detector writes labelme JSONs, no GUI) and launching labelme.

Pre-labelling writes a JSON only for images that have none, through `write_labelme(...,
overwrite=False)`: an existing JSON is human work and is never touched. An image where the
detector finds nothing is left without a JSON (still *unlabeled*) unless `write_empty` is
set: an empty JSON means "no face here" (a negative), a claim a missed face would make false.
Each prelabelled rectangle carries the detector's name and score in its labelme
`description`, and the capture session / person stamped into the image go into the JSON's
`facekit` object.

labelme (6.3.1) runs as a subprocess on `DATASET/images` with `--labels` and `--output` set to
the same folder, so annotations land beside the images; auto-save is labelme's default there.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .core.errors import DatatoolError, ImageError, OutputExistsError
from .core.issues import Issue

LABELME_INSTALL = "pip install labelme==6.3.1  (PyQt5 comes with it)"


@dataclass
class PrelabelResult:
    """What `prelabel` did: JSONs written with their box counts, images it left alone, problems."""

    detector: str
    written: dict[Path, int] = field(default_factory=dict)  # JSON path -> number of boxes
    existing: int = 0  # images that already had a JSON (never touched)
    interrupted: bool = False  # Ctrl-C: every JSON listed in `written` is complete
    no_face: list[Path] = field(default_factory=list)  # images left unlabeled: nothing found
    issues: list[Issue] = field(default_factory=list)

    def histogram(self) -> Counter:
        """{number of boxes: number of images}, images left unlabeled counted under 0."""
        hist = Counter(self.written.values())
        hist[0] += len(self.no_face)
        if not hist[0]:
            del hist[0]
        return hist

    def histogram_line(self) -> str:
        hist = self.histogram()
        if not hist:
            return "no images to prelabel"
        parts = []
        for n in sorted(hist):
            what = "box" if n == 1 else "boxes"
            parts.append(f"{n} {what}: {hist[n]} image{'s' if hist[n] != 1 else ''}")
        return ", ".join(parts)


def _labels_list(labels) -> list[str]:
    if isinstance(labels, str):
        labels = labels.split(",")
    out = [lab.strip() for lab in labels if lab and lab.strip()]
    if not out:
        raise DatatoolError("--labels: expected at least one label, e.g. --labels face")
    return out


def prelabel(root: Path, *, detector="haar", labels=("face",), min_score: float = 0.0,
             write_empty: bool = False, progress: bool = True) -> PrelabelResult:
    """Write a labelme JSON with the detector's rectangles for every image under `root` that has none.

    `detector` is a `--detector` value or a `Detector`; boxes get the first of `labels`.
    Corrupt images are reported in `issues` and skipped. Ctrl-C stops between images
    (`interrupted`); every JSON written so far is complete.
    """
    from tqdm import tqdm

    from .dataset import list_images
    from .core.detect import Detector, get_detector
    from .formats.labelme import json_path_for

    label = _labels_list(labels)[0]
    todo = []
    result = PrelabelResult(detector="")
    for img in list_images(root):
        if json_path_for(img).exists():
            result.existing += 1
        else:
            todo.append(img)
    # a trained run reports every face scoring at least min_score (its own threshold without one)
    det = detector if isinstance(detector, Detector) else get_detector(detector, threshold=min_score or None)
    result.detector = det.name
    try:
        for img in tqdm(todo, desc=f"prelabel ({det.name})", unit="image", file=sys.stderr,
                        disable=not progress or not todo, dynamic_ncols=True):
            _prelabel_one(img, det, label=label, min_score=min_score, write_empty=write_empty, result=result)
    except KeyboardInterrupt:
        result.interrupted = True
    return result


def _prelabel_one(img: Path, det, *, label: str, min_score: float, write_empty: bool,
                  result: PrelabelResult) -> None:
    from .core.provenance import capture_info
    from .formats.labelme import json_path_for, write_labelme
    from .core.images import load_rgb
    from .core.sample import Box, Sample

    try:
        rgb = load_rgb(img)
    except ImageError as e:
        result.issues.append(Issue.from_error(e, prefix="skipped: ", code="bad-image"))
        return
    h, w = rgb.shape[:2]
    boxes = [Box(d.box.x_min, d.box.y_min, d.box.x_max, d.box.y_max, label=label,
                 attributes={"description": f"prelabel {det.name} {d.score:.2f}"})
             for d in det.detect(rgb) if d.score >= min_score]
    if not boxes and not write_empty:
        result.no_face.append(img)
        return
    info = capture_info(img) or {}
    attributes = {key: info[key] for key in ("session", "person") if info.get(key)}
    sample = Sample(image_path=img, width=w, height=h, boxes=tuple(boxes), attributes=attributes)
    jp = json_path_for(img)
    try:
        write_labelme(sample, jp, overwrite=False)
    except OutputExistsError:  # someone saved this image in labelme meanwhile: theirs wins
        result.existing += 1
        return
    result.written[jp] = len(boxes)


# --------------------------------------------------------------------------- labelme

def labelme_available() -> bool:
    return importlib.util.find_spec("labelme") is not None and importlib.util.find_spec("PyQt5") is not None


def labelme_program() -> list[str]:
    """How to start labelme: the `labelme` script beside this Python, else on PATH, else `python -m labelme`."""
    here = Path(sys.executable).parent / ("labelme.exe" if os.name == "nt" else "labelme")
    if here.is_file():
        return [str(here)]
    found = shutil.which("labelme")
    if found:
        return [found]
    return [sys.executable, "-m", "labelme"]


def labelme_command(root: Path, *, labels=("face",), program: list[str] | None = None) -> list[str]:
    """The labelme 6.3.1 command line for dataset `root`: its images folder, the label list,
    annotations written beside the images (`--output` = the images folder)."""
    from .dataset import images_dir

    images = images_dir(root)
    return [*(program or labelme_program()), str(images), "--labels", ",".join(_labels_list(labels)),
            "--output", str(images)]


def suspects_folder(root: Path, audit: Path) -> tuple[Path, int, list[str]]:
    """For `label --only-suspects`: a hidden folder under `root`'s images of links to just the images
    an audit JSON names (`core.suspects.link_suspects`; labelme saves through the links into the
    dataset's own JSONs). Returns `(folder, linked, missing)`; no suspect left is a `DatatoolError`."""
    from .core.suspects import link_suspects
    from .dataset import images_dir

    folder, linked, missing = link_suspects(audit, images_dir(root))
    if not linked:
        raise DatatoolError(f"{audit}: no suspect image of it is in {images_dir(root)}"
                            + (f" ({len(missing)} listed elsewhere or gone)" if missing else ""))
    return folder, linked, missing


def format_command(cmd: list[str]) -> str:
    return shlex.join(cmd)


def check_can_launch(*, require_display: bool = True) -> None:
    """Raise a clear `DatatoolError` if labelme is missing or there is no display to show it on."""
    from .core.qtview import display_available

    fallback = ("`datatool prelabel DATASET` and `datatool label DATASET --dry-run` still work "
                "without it.")
    if not labelme_available():
        raise DatatoolError(f"labelme is not installed: {LABELME_INSTALL}. {fallback}")
    if require_display and not display_available():
        raise DatatoolError("no display to show labelme on (DISPLAY/WAYLAND_DISPLAY unset or "
                            "QT_QPA_PLATFORM=offscreen): run `datatool label` on a desktop session, "
                            f"or copy the dataset to one. {fallback}")


def start_labelme(root: Path, *, labels=("face",), require_display: bool = True, env: dict | None = None,
                  program: list[str] | None = None, **popen) -> subprocess.Popen:
    """Start labelme on dataset `root` and return the process (the caller waits or stops it).

    `program` replaces the labelme executable (default: `labelme_program()`); `popen` goes to Popen.
    """
    check_can_launch(require_display=require_display)
    cmd = labelme_command(root, labels=labels, program=program)
    try:
        return subprocess.Popen(cmd, env=env, **popen)
    except OSError as e:
        raise DatatoolError(f"cannot start labelme ({format_command(cmd)}): {e.strerror or e}. "
                            f"Reinstall it: {LABELME_INSTALL}") from e


def run_labelme(root: Path, *, labels=("face",)) -> int:
    """Start labelme on dataset `root` and wait until the user closes it; its exit code.

    Ctrl-C in the terminal stops labelme (it auto-saves each image when moving to the next).
    """
    proc = start_labelme(root, labels=labels)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        return 130
