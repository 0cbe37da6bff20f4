"""`trainer export`: a run's detector as a TensorFlow SavedModel or a TFLite flatbuffer.

Both keep the model's contract: input `image` float32 `(1, size, size, 3)` RGB 0-255 (the
backbone's preprocessing is inside), outputs `presence` `(1, 1)` and `box` `(1, 4)` normalized
`[x_min, y_min, x_max, y_max]`. `--quantize` stores weights as int8 (dynamic-range quantization:
activations stay float, ~4x smaller, usually faster on CPU).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from datatool.core.errors import DatatoolError, OutputExistsError

FORMATS = ("saved_model", "tflite")


def default_path(run: Path, fmt: str, quantize: bool) -> Path:
    if fmt == "saved_model":
        return Path(run) / "export" / "saved_model"
    return Path(run) / "export" / ("model_int8.tflite" if quantize else "model.tflite")


def _saved_model(model, dest: Path) -> None:
    model.export(str(dest), format="tf_saved_model", verbose=False)


def export(run: Path, *, fmt: str = "tflite", quantize: bool = False, out: Path | None = None,
           overwrite: bool = False) -> Path:
    """Export RUN's `model.keras`; returns the written path (a folder for SavedModel)."""
    from .models import load_run

    if fmt not in FORMATS:
        raise DatatoolError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    if quantize and fmt != "tflite":
        raise DatatoolError("--quantize: only applies to --format tflite")
    dest = Path(out) if out else default_path(run, fmt, quantize)
    if dest.exists() and not overwrite:
        raise OutputExistsError(f"{dest}: already exists (use --overwrite to replace it)")
    model, _ = load_run(run)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=dest.parent))
    try:
        sm = work / "saved_model"
        _saved_model(model, sm)
        if fmt == "saved_model":
            if dest.exists():
                shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
            os.replace(sm, dest)
            return dest
        import tensorflow as tf

        converter = tf.lite.TFLiteConverter.from_saved_model(str(sm))
        if quantize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        try:
            flat = converter.convert()
        except Exception as e:
            raise DatatoolError(f"{run}: TFLite conversion failed ({str(e).strip().splitlines()[0]})") from e
        tmp = work / "model.tflite"
        tmp.write_bytes(flat)
        os.replace(tmp, dest)
        return dest
    finally:
        shutil.rmtree(work, ignore_errors=True)


def tflite_interpreter(path: Path):
    """A LiteRT interpreter (the `ai-edge-litert` package), or TF's own where it is not installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - depends on the install
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    try:
        return Interpreter(model_path=str(path))
    except Exception as e:
        raise DatatoolError(f"{path}: not a TFLite model ({e})") from e


def run_tflite(path: Path, images) -> dict:
    """`{"presence": (n, 1), "box": (n, 4)}` from a TFLite export, one image at a time (float32
    RGB 0-255 at the model's input size)."""
    interp = tflite_interpreter(path)
    runner = interp.get_signature_runner()
    (input_name,) = runner.get_input_details().keys()
    out = {"presence": [], "box": []}
    for img in np.asarray(images, np.float32):
        res = runner(**{input_name: img[None]})
        for key in out:
            out[key].append(np.asarray(res[key]).reshape(-1))
    return {k: np.stack(v) for k, v in out.items()}
