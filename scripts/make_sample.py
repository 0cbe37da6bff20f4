#!/usr/bin/env python
"""Build facekit's bundled sample data from real photos that scikit-image ships.

Nothing is downloaded: every pixel comes from files inside the installed `scikit-image`
wheel (`skimage.data`), and the same seed gives the same bytes (same library versions).

What it writes under OUT (default: datasets/sample; about 1 MB, committed):

  wider/wider_face_sample_bbx_gt.txt     WIDER FACE ground truth for the training set
  wider/images/0--Sample/*.jpg           real faces composited onto background photos
  heldout/images/*.jpg + *.json          a labelme dataset whose faces never appear in training
  people/NAME/*.jpg                      face crops per "person" for identity plumbing demos
  manifest.json                          every image: background, face crop ids, boxes

With `--video CLIP.avi` it writes only the stand-in webcam clip (MJPG, 320x240, 10 fps, 9 s:
the astronaut's head moving and leaning in and out over a table photo, leaving the picture
in the last second) and `CLIP_boxes.csv` with the true face box of every frame. The clip is
about 3 MB, so it is generated when needed (under a second) rather than committed.

How a face is composited. `skimage.data.lfw_subset()` holds 100 real face crops from LFW
(25x25, grey, tightly framed: eyebrows-to-chin, ear-to-ear) and 100 non-face crops. Each
face crop is upscaled (bicubic), given a skin chroma (its grey values stay the luminance),
and pasted through a soft rounded mask so no hard tile edge is left. The face box is not
the pasted tile: it is the region `LFW_FACE` of the tile (x 8%..92%, y 4%..98%), where the
face is, as checked on a contact sheet. Non-face crops get exactly the same treatment and
are pasted as distractors (never boxed), so "a pasted patch" is not a shortcut for "face".
The astronaut's head is cut from `astronaut()` with a hand-checked face box (`ASTRONAUT_FACE`).

The 100 LFW faces are split by index before anything is composited (`partition()`): the
held-out images use only held-out crops; `manifest.json` records which crop went where.

Example:
    python scripts/make_sample.py --out datasets/sample --overwrite
    python scripts/make_sample.py --video demo_out/webcam.avi --check
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

SEED = 20240917
MANIFEST = "manifest.json"
WIDER_GT = "wider/wider_face_sample_bbx_gt.txt"
WIDER_EVENT = "0--Sample"
JPEG_QUALITY = 88

# Counts of the sets (faces per image: see `_plan`).
N_TRAIN_IMAGES = 40
N_HELDOUT_IMAGES = 10
N_HELDOUT_CROPS = 20  # LFW face crops reserved for the held-out set
N_ASTRONAUT_IN_TRAIN = 3
MORE_EVENT = "1--More"  # --wider N: an extra, larger training set for the demo (not committed)
MORE_GT = "wider_face_more_bbx_gt.txt"

# Where the face is inside a 25x25 LFW crop, as fractions (x_min, y_min, x_max, y_max).
LFW_FACE = (0.08, 0.04, 0.92, 0.98)
# The astronaut's face in astronaut() pixels (forehead below the fringe to chin, cheek to cheek),
# and the head region cut around it (hair and a little collar included).
ASTRONAUT_FACE = (176.0, 68.0, 276.0, 180.0)
ASTRONAUT_HEAD = (142, 14, 310, 206)

# Background photos (no human faces in them). `camera` (a photographer) and `coins` (portraits on
# coins) are left out on purpose.
BACKGROUNDS = ("coffee", "chelsea", "rocket", "brick", "grass", "gravel", "hubble_deep_field",
               "retina", "immunohistochemistry", "moon", "page", "text")

# Source and licence of every skimage image used, as scikit-image's own docstrings state them.
SOURCES = {
    "astronaut": "Eileen Collins, NASA Great Images database; public domain (no known copyright restrictions)",
    "lfw_subset": ("Labeled Faces in the Wild (vis-www.cs.umass.edu/lfw), 100 face + 100 non-face crops "
                   "resized to 25x25 by scikit-image; LFW images are news photos collected from the web "
                   "for research use, no explicit licence"),
    "coffee": "Rachel Michetti, CC0",
    "chelsea": "Stefan van der Walt, CC0",
    "rocket": "SpaceX (Falcon 9 / DSCOVR launch), released into the public domain",
    "brick": "CC0Textures (Bricks25), CC0",
    "grass": "DeviantArt user linolafett (Grass-01), CC0",
    "gravel": "CC0Textures (Gravel04), CC0",
    "hubble_deep_field": "NASA / HubbleSite, public domain",
    "retina": "Wikimedia Commons (fundus photograph of normal left eye), CC0 1.0",
    "immunohistochemistry": "no known copyright restrictions (scikit-image)",
    "moon": "scikit-image test image (no licence note in scikit-image)",
    "page": "scikit-image test image (no licence note in scikit-image)",
    "text": "Wikimedia Commons (File:Corner.png), public domain",
}

VIDEO_SIZE = (320, 240)
VIDEO_FPS = 10
VIDEO_SECONDS = 9
VIDEO_BACKGROUND = "coffee"
VIDEO_QUALITY = 80
VIDEO_NOISE = 2.0  # sensor noise, grey levels (std)
VIDEO_EXIT_FRAMES = 10  # the last second: the face slides out of the picture (negatives for capture)

PEOPLE_VARIANTS = 6
PEOPLE_SIZE = 112


# ---------------------------------------------------------------------------------------------
# sources


def load_sources() -> dict:
    """The skimage images used, as uint8 arrays (faces grey 25x25, the rest RGB)."""
    from datatool.core.errors import DatatoolError

    try:
        import skimage.data as skd
    except ImportError as e:
        raise DatatoolError("scikit-image is needed for the sample photos: pip install 'scikit-image>=0.24' "
                            "(or pip install -e '.[test]')") from e

    lfw = skd.lfw_subset()  # float64 in [0, 1]: 100 faces then 100 non-faces
    lfw = np.clip(np.round(lfw * 255.0), 0, 255).astype(np.uint8)
    backgrounds = {}
    for name in BACKGROUNDS:
        img = getattr(skd, name)()
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        backgrounds[name] = np.ascontiguousarray(img[:, :, :3]).astype(np.uint8)
    return {"faces": lfw[:100], "nonfaces": lfw[100:], "astronaut": skd.astronaut(),
            "backgrounds": backgrounds}


def partition(n_faces: int = 100, *, seed: int = SEED) -> dict:
    """LFW face crop indices split before compositing: held-out crops never reach training."""
    order = np.random.default_rng([seed, 1]).permutation(n_faces)
    heldout = sorted(int(i) for i in order[:N_HELDOUT_CROPS])
    train = sorted(int(i) for i in order[N_HELDOUT_CROPS:])
    return {"train": train, "heldout": heldout}


# ---------------------------------------------------------------------------------------------
# compositing


def soft_mask(h: int, w: int, *, edge: float = 0.18, power: float = 4.0):
    """Alpha in [0, 1]: a rounded rectangle (super-ellipse) opaque inside, fading over `edge`."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    dx = np.abs((xx + 0.5) / w * 2.0 - 1.0)
    dy = np.abs((yy + 0.5) / h * 2.0 - 1.0)
    r = (dx ** power + dy ** power) ** (1.0 / power)
    return np.clip((1.0 - r) / edge, 0.0, 1.0)


def skin_tile(grey, *, rng, gamma: float = 1.0):
    """A grey crop as RGB with a skin-like chroma (YCrCb: its grey values kept as luminance)."""
    import cv2

    y = grey.astype(np.float64) / 255.0
    if gamma != 1.0:
        y = y ** gamma
    y = np.clip(np.round(y * 255.0), 0, 255).astype(np.uint8)
    cr = int(rng.integers(138, 162))
    cb = int(rng.integers(100, 122))
    ycc = np.dstack([y, np.full_like(y, cr), np.full_like(y, cb)])
    return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)


def paste(canvas, tile, x0: int, y0: int) -> None:
    """Alpha-blend an RGB tile onto `canvas` in place at integer (x0, y0), through `soft_mask`."""
    h, w = tile.shape[:2]
    alpha = soft_mask(h, w)[:, :, None]
    region = canvas[y0:y0 + h, x0:x0 + w].astype(np.float64)
    blended = alpha * tile.astype(np.float64) + (1.0 - alpha) * region
    canvas[y0:y0 + h, x0:x0 + w] = np.clip(np.round(blended), 0, 255).astype(np.uint8)


def background(sources, name: str, width: int, height: int, *, rng):
    """A random crop (aspect of the output) of a background photo, resized to width x height."""
    import cv2

    img = sources["backgrounds"][name]
    bh, bw = img.shape[:2]
    aspect = width / height
    ch = int(rng.integers(int(min(bh, bw / aspect) * 0.55), int(min(bh, bw / aspect)) + 1))
    cw = int(round(ch * aspect))
    cx = int(rng.integers(0, bw - cw + 1))
    cy = int(rng.integers(0, bh - ch + 1))
    crop = img[cy:cy + ch, cx:cx + cw]
    out = cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA)
    return out, [cx, cy, cx + cw, cy + ch]


def face_tile(sources, crop: str, face_w: int, *, rng, illumination: bool):
    """(tile RGB, face box inside the tile as floats, upscale factor) for a crop id at a face width."""
    import cv2

    gamma = float(rng.choice([0.45, 2.0])) if illumination else float(rng.uniform(0.85, 1.15))
    if crop == "astronaut":
        hx0, hy0, hx1, hy1 = ASTRONAUT_HEAD
        head = sources["astronaut"][hy0:hy1, hx0:hx1]
        fx0, fy0, fx1, fy1 = ASTRONAUT_FACE
        s = face_w / (fx1 - fx0)
        tw, th = max(1, round((hx1 - hx0) * s)), max(1, round((hy1 - hy0) * s))
        tile = cv2.resize(head, (tw, th), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
        if gamma != 1.0:
            lut = np.clip(np.round(255.0 * (np.arange(256) / 255.0) ** gamma), 0, 255).astype(np.uint8)
            tile = lut[tile]
        face = ((fx0 - hx0) * s, (fy0 - hy0) * s, (fx1 - hx0) * s, (fy1 - hy0) * s)
        return tile, face, s
    kind, idx = crop.split(":")
    grey = sources["faces" if kind == "lfw_face" else "nonfaces"][int(idx)]
    size = max(8, round(face_w / (LFW_FACE[2] - LFW_FACE[0])))
    big = cv2.resize(grey, (size, size), interpolation=cv2.INTER_CUBIC)
    tile = skin_tile(big, rng=rng, gamma=gamma)
    face = tuple(f * size for f in LFW_FACE)
    return tile, face, size / grey.shape[0]


def _blur_level(upscale: float) -> int:
    # WIDER blur: 0 clear, 1 normal, 2 heavy. A 25 px crop blown up is soft; say how soft.
    return 0 if upscale < 3.5 else (1 if upscale < 5.5 else 2)


def _place(rng, w: int, h: int, tw: int, th: int, taken: list, tries: int = 200):
    """A top-left corner for a tw x th tile fully inside w x h, not touching tiles in `taken`."""
    for _ in range(tries):
        x = int(rng.integers(0, w - tw + 1))
        y = int(rng.integers(0, h - th + 1))
        if all(x + tw <= a or a + aw <= x or y + th <= b or b + bh <= y for a, b, aw, bh in taken):
            return x, y
    return None


def compose(sources, *, faces: list[str], distractors: list[str], width: int, height: int,
            background_name: str, rng) -> tuple:
    """One composited image: (RGB array, face records, distractor records, background record).

    Face records hold the crop id, the integer pixel box `[x_min, y_min, x_max, y_max]` and
    the WIDER attributes. Tiles never overlap each other and lie fully inside the image.
    """
    canvas, bg_crop = background(sources, background_name, width, height, rng=rng)
    taken: list = []
    face_recs, dis_recs = [], []
    short = min(width, height)
    for kind, items in (("face", faces), ("distractor", distractors)):
        for crop in items:
            lo, hi = (0.26, 0.62) if len(faces) < 2 else (0.22, 0.42)
            for attempt in range(20):
                shrink = 0.9 ** attempt  # crowded image: try smaller tiles
                face_w = int(round(short * rng.uniform(lo, hi) * shrink))
                illum = kind == "face" and rng.random() < 0.15
                tile, fbox, upscale = face_tile(sources, crop, face_w, rng=rng, illumination=illum)
                th, tw = tile.shape[:2]
                if tw <= width and th <= height:
                    spot = _place(rng, width, height, tw, th, taken)
                    if spot is not None:
                        break
            else:
                raise RuntimeError(f"cannot place {crop} on a {width}x{height} image")
            x, y = spot
            taken.append((x, y, tw, th))
            paste(canvas, tile, x, y)
            box = [int(round(x + fbox[0])), int(round(y + fbox[1])),
                   int(round(x + fbox[2])), int(round(y + fbox[3]))]
            box = [max(0, box[0]), max(0, box[1]), min(width, box[2]), min(height, box[3])]
            if kind == "face":
                attrs = {"blur": _blur_level(upscale), "expression": 0, "illumination": int(illum),
                         "invalid": 0, "occlusion": 0, "pose": 0}
                face_recs.append({"crop": crop, "box": box, "attributes": attrs})
            else:
                dis_recs.append({"crop": crop, "box": box})
    return canvas, face_recs, dis_recs, {"name": background_name, "crop": bg_crop}


def _plan(n_images: int, crops: list[str], *, rng, negatives: float, pairs: float,
          solo: tuple[str, ...] = ()) -> list[list[str]]:
    """Faces per image: ~`negatives` with none, ~`pairs` with two, the rest one.

    Each crop in `solo` gets an image of its own (the astronaut appears a few times; never
    twice in one picture); the other faces are drawn from `crops` without repetition.
    """
    n_neg = int(round(n_images * negatives))
    n_pair = int(round(n_images * pairs))
    n_one = n_images - n_neg - n_pair
    if len(solo) > n_one or n_one - len(solo) + 2 * n_pair > len(crops):
        raise RuntimeError(f"not enough face crops for {n_images} images")
    pool = [crops[i] for i in rng.permutation(len(crops))]
    singles = [[c] for c in solo] + [[c] for c in pool[:n_one - len(solo)]]
    rest = pool[n_one - len(solo):]
    plan = [[]] * n_neg + [rest[2 * k:2 * k + 2] for k in range(n_pair)] + singles
    return [plan[i] for i in rng.permutation(n_images)]


def _image_size(rng) -> tuple[int, int]:
    w = int(rng.choice([192, 224, 256, 288, 320]))
    h = int(rng.choice([0.75, 0.75, 1.0, 0.5625]) * w) // 2 * 2
    return w, h


def build_set(sources, *, face_crops: list[str], n_images: int, prefix: str, rng,
              solo: tuple[str, ...] = ()) -> list[dict]:
    """Composite a set of images; returns records with the RGB array under `"rgb"`."""
    plan = _plan(n_images, face_crops, rng=rng, negatives=0.2, pairs=0.15, solo=solo)
    nonface_ids = [f"lfw_nonface:{i}" for i in range(100)]
    records = []
    for k, faces in enumerate(plan):
        w, h = _image_size(rng)
        # distractors: one or two non-face crops in every negative, one in ~a third of the rest
        n_dis = int(rng.integers(1, 3)) if not faces else int(rng.random() < 0.33)
        dis = [nonface_ids[int(i)] for i in rng.choice(100, size=n_dis, replace=False)]
        bg = BACKGROUNDS[int(rng.integers(0, len(BACKGROUNDS)))]
        rgb, face_recs, dis_recs, bg_rec = compose(
            sources, faces=faces, distractors=dis, width=w, height=h, background_name=bg, rng=rng)
        records.append({"name": f"{prefix}_{k:03d}.jpg", "width": w, "height": h, "background": bg_rec,
                        "faces": face_recs, "distractors": dis_recs, "rgb": rgb})
    return records


# ---------------------------------------------------------------------------------------------
# writers


def wider_text(records: list[dict], event: str) -> str:
    """WIDER FACE gt text: file line, count line, one `x y w h blur expression illumination
    invalid occlusion pose` row per face."""
    keys = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
    lines = []
    for r in records:
        lines.append(f"{event}/{r['name']}")
        lines.append(str(len(r["faces"])))
        for f in r["faces"]:
            x0, y0, x1, y1 = f["box"]
            lines.append(" ".join(str(v) for v in (x0, y0, x1 - x0, y1 - y0, *(f["attributes"][k] for k in keys))))
        if not r["faces"]:
            lines.append("0 0 0 0 0 0 0 0 0 0")  # WIDER: a 0-face image still has one all-zero row
    return "\n".join(lines) + "\n"


def write_jpeg(path: Path, rgb, written: list) -> None:
    from datatool.core.fsutil import write_bytes_atomic
    from datatool.core.images import encode_jpeg

    write_bytes_atomic(path, encode_jpeg(rgb, quality=JPEG_QUALITY))
    written.append(path)


def write_heldout(out: Path, records: list[dict], written: list) -> None:
    """Held-out set as a labelme dataset root: images/NAME.jpg with NAME.json beside it."""
    from datatool.formats.labelme import write_labelme
    from datatool.core.images import sha256_file
    from datatool.core.sample import Box, Sample

    for r in records:
        img = out / "heldout" / "images" / r["name"]
        write_jpeg(img, r["rgb"], written)
        boxes = tuple(Box(*map(float, f["box"]), label="face") for f in r["faces"])
        sample = Sample(img, r["width"], r["height"], boxes, image_id=r["name"], group=sha256_file(img))
        written.append(write_labelme(sample, img.with_suffix(".json"), overwrite=True))


# ---------------------------------------------------------------------------------------------
# video


def video_frames(sources, *, rng):
    """Yield (frame RGB, true face box or None, fully_visible) for the stand-in webcam clip."""
    import cv2

    w, h = VIDEO_SIZE
    n = VIDEO_FPS * VIDEO_SECONDS
    bg_full = sources["backgrounds"][VIDEO_BACKGROUND]
    bh, bw = bg_full.shape[:2]
    ch = int(bh * 0.9)
    cw = int(ch * w / h)
    bg = cv2.resize(bg_full[bh - ch:, :cw], (w, h), interpolation=cv2.INTER_AREA).astype(np.float64)
    hx0, hy0, hx1, hy1 = ASTRONAUT_HEAD
    head = sources["astronaut"][hy0:hy1, hx0:hx1]
    fx0, fy0, fx1, fy1 = ASTRONAUT_FACE
    for i in range(n):
        t = i / VIDEO_FPS
        face_w = 78 + 18 * math.sin(2 * math.pi * t / 5.0)  # leaning in and out
        s = face_w / (fx1 - fx0)
        tw, th = round((hx1 - hx0) * s), round((hy1 - hy0) * s)
        cx = w / 2 + 70 * math.sin(2 * math.pi * t / 6.0)
        cy = h / 2 + 6 + 10 * math.sin(2 * math.pi * t / 4.0)
        if i >= n - VIDEO_EXIT_FRAMES:  # walks out to the right
            cx += (i - (n - VIDEO_EXIT_FRAMES) + 1) * 28
        x0, y0 = int(round(cx - tw / 2)), int(round(cy - th / 2))
        gain = 1.0 + 0.05 * math.sin(2 * math.pi * t / 3.0)  # auto-exposure breathing
        frame = np.clip(bg * gain + rng.normal(0, VIDEO_NOISE, bg.shape), 0, 255).astype(np.uint8)
        tile = cv2.resize(head, (tw, th), interpolation=cv2.INTER_AREA)
        # paste the part of the tile that lies inside the frame
        ax0, ay0 = max(0, x0), max(0, y0)
        ax1, ay1 = min(w, x0 + tw), min(h, y0 + th)
        if ax1 > ax0 and ay1 > ay0:
            alpha = soft_mask(th, tw)[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0, None]
            part = tile[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0].astype(np.float64)
            region = frame[ay0:ay1, ax0:ax1].astype(np.float64)
            frame[ay0:ay1, ax0:ax1] = np.clip(np.round(alpha * part * gain + (1 - alpha) * region), 0, 255)
        box = [x0 + (fx0 - hx0) * s, y0 + (fy0 - hy0) * s, x0 + (fx1 - hx0) * s, y0 + (fy1 - hy0) * s]
        visible = box[0] >= 0 and box[1] >= 0 and box[2] <= w and box[3] <= h
        clipped = [max(0.0, box[0]), max(0.0, box[1]), min(float(w), box[2]), min(float(h), box[3])]
        has_face = clipped[2] - clipped[0] >= 0.5 * (box[2] - box[0])  # at least half of it in view
        yield frame, ([round(v) for v in clipped] if has_face else None), visible


def boxes_csv_for(video_path: Path) -> Path:
    """Where the per-frame truth of a clip lives: `webcam.avi` -> `webcam_boxes.csv`."""
    video_path = Path(video_path)
    return video_path.with_name(video_path.stem + "_boxes.csv")


def make_video(path: Path, *, overwrite: bool = False) -> list[dict]:
    """Write the stand-in webcam clip (MJPG AVI, OpenCV's own encoder) and its truth CSV.

    Returns one row per frame: `frame`, `time_s`, `box` (pixel `[x_min, y_min, x_max, y_max]`
    of the part in view, None once less than half the face is in the picture), `fully_visible`.
    """
    import cv2

    from datatool.core.errors import DatatoolError, OutputExistsError
    from datatool.core.fsutil import write_text_atomic

    path = Path(path)
    if path.suffix.lower() != ".avi":
        raise DatatoolError(f"{path}: the clip is an MJPG .avi file; give a path ending in .avi")
    csv_path = boxes_csv_for(path)
    for p in (path, csv_path):
        if p.exists() and not overwrite:
            raise OutputExistsError(f"{p}: already exists (use --overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    sources = load_sources()
    # VideoWriter picks the container from the extension, so the temporary name keeps ".avi".
    fd, tmp = tempfile.mkstemp(prefix=".facekit-tmp-webcam.", suffix=".avi", dir=path.parent)
    os.close(fd)
    rows = []
    try:
        writer = cv2.VideoWriter(tmp, cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*"MJPG"),
                                 float(VIDEO_FPS), VIDEO_SIZE)
        if not writer.isOpened():
            raise DatatoolError(f"{path}: OpenCV cannot write an MJPG video here")
        writer.set(cv2.VIDEOWRITER_PROP_QUALITY, VIDEO_QUALITY)
        rng = np.random.default_rng([SEED, 3])
        for i, (frame, box, visible) in enumerate(video_frames(sources, rng=rng)):
            writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
            rows.append({"frame": i, "time_s": round(i / VIDEO_FPS, 3), "box": box, "fully_visible": visible})
        writer.release()
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    lines = ["frame,time_s,x_min,y_min,x_max,y_max,fully_visible"]
    for r in rows:
        b = r["box"] or ["", "", "", ""]
        lines.append(",".join(str(v) for v in (r["frame"], r["time_s"], *b, int(r["fully_visible"]))))
    write_text_atomic(csv_path, "\n".join(lines) + "\n")
    return rows


def read_boxes_csv(csv_path: Path) -> list[dict]:
    """The rows `make_video` wrote (box None where no face is in view)."""
    import csv

    rows = []
    with open(csv_path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            box = None if r["x_min"] == "" else [int(r[k]) for k in ("x_min", "y_min", "x_max", "y_max")]
            rows.append({"frame": int(r["frame"]), "time_s": float(r["time_s"]), "box": box,
                         "fully_visible": r["fully_visible"] == "1"})
    return rows


def haar_rate(video_path: Path, rows: list[dict], *, every: int = 1) -> dict:
    """How often OpenCV's frontal-face Haar cascade finds the true face (IoU >= 0.4) in the clip,
    over every `every`-th frame (5 = what `capture --interval 0.5` keeps at 10 fps)."""
    import cv2

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    cap = cv2.VideoCapture(str(video_path))
    hits = visible = false_pos = 0
    for row in rows:
        ok, frame = cap.read()
        if not ok:
            break
        if row["frame"] % every:
            continue
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        dets = [(x, y, x + w, y + h) for x, y, w, h in cascade.detectMultiScale(grey, 1.1, 5, minSize=(30, 30))]
        truth = row["box"]
        matched = truth is not None and any(_iou(d, truth) >= 0.4 for d in dets)
        false_pos += sum(1 for d in dets if truth is None or _iou(d, truth) < 0.4)
        if row["fully_visible"]:
            visible += 1
            hits += int(matched)
    cap.release()
    return {"frames_face_fully_visible": visible, "haar_found": hits,
            "rate": round(hits / visible, 3) if visible else 0.0, "false_positives": false_pos}


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# people


def people_crops(sources, names: dict, *, rng) -> dict:
    """NAME -> list of square grey face crops: jittered copies (shift, scale, tilt, light, mirror)
    of ONE photo per person. Good for plumbing, says nothing about recognition accuracy."""
    import cv2

    out = {}
    for name, crop in names.items():
        if crop == "astronaut":
            src = cv2.cvtColor(sources["astronaut"], cv2.COLOR_RGB2GRAY)
            fx0, fy0, fx1, fy1 = ASTRONAUT_FACE
        else:
            g = sources["faces"][int(crop.split(":")[1])]
            src = cv2.resize(g, (200, 200), interpolation=cv2.INTER_CUBIC)
            fx0, fy0, fx1, fy1 = (f * 200 for f in LFW_FACE)
        cx, cy, side = (fx0 + fx1) / 2, (fy0 + fy1) / 2, max(fx1 - fx0, fy1 - fy0)
        variants = []
        for _ in range(PEOPLE_VARIANTS):
            ang = float(rng.uniform(-8, 8))
            sc = float(rng.uniform(0.92, 1.08))
            dx, dy = (float(v) for v in rng.uniform(-0.05, 0.05, size=2) * side)
            half = side * sc / 2
            m = cv2.getRotationMatrix2D((cx + dx, cy + dy), ang, PEOPLE_SIZE / (2 * half))
            m[0, 2] += PEOPLE_SIZE / 2 - (cx + dx)
            m[1, 2] += PEOPLE_SIZE / 2 - (cy + dy)
            img = cv2.warpAffine(src, m, (PEOPLE_SIZE, PEOPLE_SIZE), flags=cv2.INTER_CUBIC,
                                 borderMode=cv2.BORDER_REFLECT)
            img = np.clip(img.astype(np.float64) * rng.uniform(0.85, 1.15), 0, 255).astype(np.uint8)
            if rng.random() < 0.5:
                img = img[:, ::-1]
            variants.append(np.repeat(img[:, :, None], 3, axis=2))
        out[name] = variants
    return out


# ---------------------------------------------------------------------------------------------
# main


def _strip(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "rgb"} for r in records]


def make_sample(out: Path, *, overwrite: bool = False) -> dict:
    """Write the whole sample under `out`; returns the manifest (also written as manifest.json)."""
    from datatool.core.fsutil import prepare_output_dir, write_json_atomic, write_text_atomic

    out = prepare_output_dir(Path(out), overwrite=overwrite)
    previous = _previous_outputs(out)
    sources = load_sources()
    parts = partition()
    written: list[Path] = []

    train = build_set(sources, face_crops=[f"lfw_face:{i}" for i in parts["train"]],
                      solo=("astronaut",) * N_ASTRONAUT_IN_TRAIN, n_images=N_TRAIN_IMAGES,
                      prefix="sample", rng=np.random.default_rng([SEED, 2]))
    for r in train:
        write_jpeg(out / "wider" / "images" / WIDER_EVENT / r["name"], r["rgb"], written)
    write_text_atomic(out / WIDER_GT, wider_text(train, WIDER_EVENT))
    written.append(out / WIDER_GT)

    heldout = build_set(sources, face_crops=[f"lfw_face:{i}" for i in parts["heldout"]],
                        n_images=N_HELDOUT_IMAGES, prefix="heldout", rng=np.random.default_rng([SEED, 4]))
    write_heldout(out, heldout, written)

    prng = np.random.default_rng([SEED, 5])
    people_names = {"astronaut": "astronaut"}
    for i in prng.choice(parts["train"], size=2, replace=False):
        people_names[f"lfw_{int(i):03d}"] = f"lfw_face:{int(i)}"
    for name, crops in people_crops(sources, people_names, rng=prng).items():
        for k, rgb in enumerate(crops):
            write_jpeg(out / "people" / name / f"{name}_{k}.jpg", rgb, written)

    manifest = {
        "generator": "scripts/make_sample.py",
        "seed": SEED,
        "crop_ids": {"lfw_face:N": "skimage.data.lfw_subset()[N] (a face)",
                     "lfw_nonface:N": "skimage.data.lfw_subset()[100 + N] (not a face; pasted as a distractor)",
                     "astronaut": "skimage.data.astronaut(), head region ASTRONAUT_HEAD"},
        "face_box_rule": {"lfw_face_fraction_of_tile": list(LFW_FACE), "astronaut_face_px": list(ASTRONAUT_FACE)},
        "partition": {"train": [f"lfw_face:{i}" for i in parts["train"]] + ["astronaut"],
                      "heldout": [f"lfw_face:{i}" for i in parts["heldout"]]},
        "sources": SOURCES,
        "wider": {"gt": WIDER_GT, "images": "wider/images", "records": _strip(train)},
        "heldout": {"images": "heldout/images", "records": _strip(heldout)},
        "people": {name: {"crop": crop, "files": [f"people/{name}/{name}_{k}.jpg" for k in range(PEOPLE_VARIANTS)]}
                   for name, crop in people_names.items()},
    }
    write_json_atomic(out / MANIFEST, manifest)
    written.append(out / MANIFEST)
    _remove_stale(out, previous, written)
    return manifest


def make_more(out: Path, n_images: int, *, overwrite: bool = False) -> list[dict]:
    """An extra WIDER-format training set of `n_images` composites under `out` (for the demo).

    Only the training face crops are used (held-out faces never appear), on an RNG stream of its
    own, so the committed sample does not change. Returns the records (without pixels).
    """
    from datatool.core.fsutil import prepare_output_dir, write_text_atomic

    out = prepare_output_dir(Path(out), overwrite=overwrite)
    parts = partition()
    # each training face appears several times, at other places, sizes and backgrounds
    repeats = 1 + (n_images * 12 // 10) // len(parts["train"])
    records = build_set(load_sources(), face_crops=[f"lfw_face:{i}" for i in parts["train"]] * repeats,
                        solo=("astronaut",) * max(1, n_images // 12), n_images=n_images,
                        prefix="more", rng=np.random.default_rng([SEED, 6, n_images]))
    written: list[Path] = []
    for r in records:
        write_jpeg(out / "images" / MORE_EVENT / r["name"], r["rgb"], written)
    write_text_atomic(out / MORE_GT, wider_text(records, MORE_EVENT))
    return _strip(records)


def _previous_outputs(out: Path) -> list[Path]:
    """Files a previous run listed in its manifest (the only files a re-run may remove)."""
    try:
        old = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    files = [old.get("wider", {}).get("gt")]
    for r in old.get("wider", {}).get("records", []):
        files.append(f"wider/images/{WIDER_EVENT}/{r['name']}")
    for r in old.get("heldout", {}).get("records", []):
        files += [f"heldout/images/{r['name']}", f"heldout/images/{Path(r['name']).stem}.json"]
    for p in old.get("people", {}).values():
        files += p.get("files", [])
    return [out / f for f in files if isinstance(f, str)]


def _remove_stale(out: Path, previous: list[Path], written: list[Path]) -> None:
    keep = {p.resolve() for p in written}
    for p in previous:
        if p.is_file() and p.resolve() not in keep:
            p.unlink()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Build the bundled sample data (real faces from scikit-image), deterministically.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n"
               "  python scripts/make_sample.py --out datasets/sample --overwrite\n"
               "  python scripts/make_sample.py --video demo_out/webcam.avi --check\n"
               "  python scripts/make_sample.py --wider 300 --out demo_out/more")
    ap.add_argument("--out", type=Path, default=REPO / "datasets" / "sample",
                    help="output folder for the image sets (default: datasets/sample)")
    ap.add_argument("--video", type=Path, metavar="CLIP.avi",
                    help="write only the stand-in webcam clip here (plus CLIP_boxes.csv)")
    ap.add_argument("--check", action="store_true",
                    help="with --video: report how often the Haar cascade finds the face")
    ap.add_argument("--wider", type=int, metavar="N",
                    help=f"write only an extra WIDER-format training set of N composites (training faces "
                         f"only) into --out: {MORE_GT} + images/{MORE_EVENT}/")
    ap.add_argument("--overwrite", action="store_true", help="replace earlier outputs")
    args = ap.parse_args(argv)

    from datatool.core.errors import DatatoolError

    try:
        if args.video:
            rows = make_video(args.video, overwrite=args.overwrite)
            print(f"video: {len(rows)} frames, {VIDEO_SIZE[0]}x{VIDEO_SIZE[1]} at {VIDEO_FPS} fps -> {args.video} "
                  f"(true boxes: {boxes_csv_for(args.video)})")
            if args.check:
                for every in (1, 5):
                    hr = haar_rate(args.video, rows, every=every)
                    print(f"Haar, every {every} frame(s): face found in {hr['haar_found']}/"
                          f"{hr['frames_face_fully_visible']} frames where it is fully visible, "
                          f"{hr['false_positives']} false positives")
            return 0
        if args.wider:
            recs = make_more(args.out, args.wider, overwrite=args.overwrite)
            print(f"wider:   {len(recs)} images, {sum(len(r['faces']) for r in recs)} faces, "
                  f"{sum(1 for r in recs if not r['faces'])} negatives -> {args.out / MORE_GT}")
            return 0
        m = make_sample(args.out, overwrite=args.overwrite)
    except DatatoolError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Interrupted: every file already written is complete (each is renamed into place); "
              "run again with --overwrite to finish", file=sys.stderr)
        return 130
    recs = m["wider"]["records"]
    print(f"wider:   {len(recs)} images, {sum(len(r['faces']) for r in recs)} faces, "
          f"{sum(1 for r in recs if not r['faces'])} negatives -> {args.out / WIDER_GT}")
    recs = m["heldout"]["records"]
    print(f"heldout: {len(recs)} images, {sum(len(r['faces']) for r in recs)} faces, "
          f"{sum(1 for r in recs if not r['faces'])} negatives -> {args.out / 'heldout' / 'images'}")
    print(f"people:  {', '.join(m['people'])} ({PEOPLE_VARIANTS} crops each) -> {args.out / 'people'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
