"""The audit's suspects file: ranked likely label mistakes, written by `datatool audit --json` and
read by `datatool report --audit` and `datatool label --only-suspects` (one format, one place).

```
{"kind": "facekit-audit", "version": 1, "dataset": "...", "detector": "haar", "images": 120,
 "suspects": [{"image": "/abs/x.jpg", "image_id": "x.jpg", "reason": "missed-face",
               "box": [x_min, y_min, x_max, y_max], "score": 0.93, "iou": 0.0,
               "message": "..."}, ...]}
```
Boxes are pixels of the image as displayed; suspects are sorted most suspicious first.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import DatatoolError

KIND = "facekit-audit"
VERSION = 1
REASONS = ("missed-face", "loose-box", "no-face")


@dataclass(frozen=True)
class Suspect:
    """One likely label mistake: the image, the box in question (pixels), why, and how sure (0-1)."""

    image: str
    image_id: str
    reason: str  # one of REASONS
    box: tuple[float, float, float, float]
    score: float
    iou: float = 0.0  # best IoU between this box and the other side's boxes
    message: str = ""

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"Suspect.reason expects one of {REASONS}, got {self.reason!r}")
        if len(self.box) != 4:
            raise ValueError(f"Suspect.box expects (x_min, y_min, x_max, y_max), got {self.box!r}")
        object.__setattr__(self, "box", tuple(float(v) for v in self.box))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["box"] = [round(v, 2) for v in self.box]
        d["score"] = round(self.score, 4)
        d["iou"] = round(self.iou, 4)
        return d


def suspects_document(suspects, *, dataset: str, detector: str, images: int) -> dict:
    return {"kind": KIND, "version": VERSION, "dataset": dataset, "detector": detector, "images": images,
            "suspects": [s.to_dict() for s in suspects]}


def read_suspects(path: Path) -> tuple[dict, list[Suspect]]:
    """`(header, suspects)` from an audit JSON; a `DatatoolError` naming the file and field if it is
    not one."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise DatatoolError(f"{path}: audit file not found (write one with `datatool audit DATASET --json {path}`)") from e
    except (OSError, ValueError) as e:
        raise DatatoolError(f"{path}: not a readable JSON file ({e})") from e
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise DatatoolError(f"{path}: kind: expected {KIND!r} (a file written by `datatool audit --json`)")
    items = doc.get("suspects")
    if not isinstance(items, list):
        raise DatatoolError(f"{path}: suspects: expected a list")
    out = []
    for k, item in enumerate(items):
        try:
            out.append(Suspect(image=str(item["image"]), image_id=str(item.get("image_id", "")),
                               reason=item["reason"], box=tuple(item["box"]), score=float(item["score"]),
                               iou=float(item.get("iou", 0.0)), message=str(item.get("message", ""))))
        except (KeyError, TypeError, ValueError) as e:
            raise DatatoolError(f"{path}: suspects[{k}]: {type(e).__name__}: {e}") from e
    header = {k: v for k, v in doc.items() if k != "suspects"}
    return header, out


def suspect_images(path: Path) -> list[str]:
    """The image paths of an audit JSON, most suspicious first, each once (for `label --only-suspects`)."""
    _, suspects = read_suspects(path)
    return list(dict.fromkeys(s.image for s in suspects))


SUSPECTS_FOLDER = ".facekit-suspects"  # hidden: dataset walkers skip it, so it never counts as data


def link_suspects(path: Path, images: Path) -> tuple[Path, int, list[str]]:
    """A folder of links to just the suspect images of an audit JSON (and their labelme JSONs), for
    `label --only-suspects`: `images/.facekit-suspects/KEY` -> `images/KEY`, keys' subfolders kept.

    labelme opened on it reads and saves through the links, so corrections land in the dataset's
    own JSONs, and each JSON's `imagePath` (relative to the JSON) stays right because image and JSON
    sit side by side in both places. The folder is rebuilt on every call. Returns `(folder, linked,
    missing)`: suspects whose image is not under `images` any more are listed in `missing`.
    """
    import shutil

    images = Path(images).resolve()
    folder = images / SUSPECTS_FOLDER
    if folder.is_symlink() or folder.is_file():
        raise DatatoolError(f"{folder}: exists and is not a folder of suspects; move it away")
    shutil.rmtree(folder, ignore_errors=True)
    linked, missing = 0, []
    for image in suspect_images(path):
        src = Path(image).resolve()
        try:
            key = src.relative_to(images)
        except ValueError:
            missing.append(image)
            continue
        if not src.is_file():
            missing.append(image)
            continue
        for f in (src, src.with_suffix(".json")):
            if f.is_file():
                dst = folder / key.parent / f.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                try:
                    dst.symlink_to(f)
                except OSError as e:
                    raise DatatoolError(f"{dst}: cannot create a link to {f} ({e.strerror or e}); "
                                        "--only-suspects needs a file system with symbolic links") from e
        linked += 1
    return folder, linked, missing
