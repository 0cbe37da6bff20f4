"""What bench/quality.py and bench/detect.py share: the demo's data paths, the shared ImageNet
weights, and trained runs that a later benchmark can reuse.

A run is trained with `trainer.fit.fit` into `WORK/NAME` and reused when that folder holds a
finished fit of the same records with the same settings by the same trainer code (`fit.json`
beside it records these and the wall time of the fit that made it).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# what `make demo` writes (scripts/demo.sh steps 1-6 and 8)
DEMO_TFDIR = ROOT / "demo_out" / "tfrecords"
DEMO_HELDOUT = ROOT / "demo_out" / "heldout-tf"
HELDOUT_PHOTOS = ROOT / "datasets" / "sample" / "heldout"
WORK = ROOT / "demo_out" / "bench"
# ImageNet MobileNetV2 (alpha 1.0); see its README: benchmarks and quality reports only
# (../shared beside the main checkout; a worktree one level deeper finds it one folder up)
_WEIGHTS_FILE = Path("shared") / "weights" / "mobilenet_v2_1.0_imagenet_notop.weights.h5"
SHARED_WEIGHTS = next((p / _WEIGHTS_FILE for p in ROOT.parents[:2] if (p / _WEIGHTS_FILE).is_file()),
                      ROOT.parent / _WEIGHTS_FILE)
WEIGHTS_NOTE = ("ImageNet MobileNetV2 weights from ../shared/weights (torchvision's, converted; for "
                "benchmarks and quality reports only, not shipped with facekit)")


def require_records(*tfdirs: Path) -> None:
    """Exit with a clear message when a TFRecord folder is missing (nothing is built here)."""
    missing = [str(t) for t in tfdirs if not (Path(t) / "dataset.json").is_file()]
    if missing:
        sys.exit(f"no TFRecords at {', '.join(missing)}: run `make demo` first (it builds "
                 f"demo_out/tfrecords and demo_out/heldout-tf), or pass --tfdir / --heldout")


def require_weights(path: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        sys.exit(f"{path}: the shared ImageNet MobileNetV2 weights are not there (pass --weights PATH)")
    return path


def load_avg() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def trainer_hash() -> str:
    """sha256 of the trainer package's sources: a run made by other trainer code is not reused."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted((ROOT / "trainer").rglob("*.py")):
        h.update(f.relative_to(ROOT).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def fit_run(tfdir: Path, run: Path, config, *, reuse: bool = True, log=print) -> tuple[Path, float, bool]:
    """`trainer.fit.fit(tfdir, run, config)`, or the finished run already there when it was made
    from the same records with the same settings. Returns `(run, fit wall seconds, reused)`."""
    from trainer.data import record_hash
    from trainer.fit import fit

    run = Path(run)
    wanted = {"fit": dataclasses.asdict(config), "record_sha256": record_hash(tfdir), "trainer": trainer_hash()}
    stamp = run / "fit.json"
    if reuse and stamp.is_file() and (run / "model.keras").is_file():
        saved = json.loads(stamp.read_text())
        if saved.get("wanted") == json.loads(json.dumps(wanted)):
            log(f"{run}: reusing the finished fit ({saved['fit_s']:.0f} s when it was trained)")
            return run, float(saved["fit_s"]), True
    t0 = time.perf_counter()
    fit(tfdir, run, config=config, overwrite=True, verbose=0, log=lambda m: None)
    fit_s = time.perf_counter() - t0
    stamp.write_text(json.dumps({"wanted": wanted, "fit_s": fit_s, "load_avg_after": load_avg()}, indent=2))
    return run, fit_s, False


def imagenet_config(image_size: int, weights: Path, *, epochs: int, fine_tune_epochs: int):
    """MobileNetV2 alpha 1.0 from the shared ImageNet weights, default phases (frozen backbone,
    then the head's default fine-tune layers)."""
    from trainer.fit import FitConfig

    return FitConfig(backbone="mobilenetv2", alpha=1.0, image_size=image_size, weights=str(weights),
                     epochs=epochs, fine_tune_epochs=fine_tune_epochs, batch_size=32, seed=0)


def fmt(v, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def write_rows(path: Path | None, args, rows: list[dict]) -> None:
    """`--json PATH`: the options and the printed rows as JSON (nothing without a path)."""
    if path:
        Path(path).write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows},
                                         indent=2, default=str) + "\n")
