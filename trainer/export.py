"""`trainer export`: a run's detector as a TensorFlow SavedModel, a TFLite flatbuffer or ONNX.

Every export takes the model's input: `image` float32 `(1, size, size, 3)` RGB 0-255 (the
backbone's preprocessing is inside).

- A one-box run (`--head single`) exports whole: outputs `presence` `(1, 1)` and `box` `(1, 4)`
  normalized `[x_min, y_min, x_max, y_max]`.
- A dense run's SavedModel is whole too, non-maximum suppression included: `boxes` `(1, K, 4)`,
  `scores` `(1, K)`, `presence`, `box`. TFLite and ONNX hold the part before NMS
  (`trainer.dense.export_model`: per-cell `scores` `(1, N)` and decoded `boxes` `(1, N, 4)`,
  builtin ops only), and a JSON file beside the export, `<name>.json`, says so and carries the
  NMS settings. `run_tflite` / `run_onnx` apply `trainer.dense.postprocess` - the very layer the
  Keras model ends in - so Keras `predict` and every export give the same faces.

`--quantize` (TFLite) stores weights as int8 (dynamic-range quantization: activations stay
float, ~4x smaller, usually faster on CPU). ONNX needs the optional extra
`pip install "facekit[onnx]"` (tf2onnx to convert, onnxruntime to run).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from datatool.core.errors import DatatoolError, OutputExistsError
from datatool.core.fsutil import write_json_atomic

FORMATS = ("saved_model", "tflite", "onnx")
ONNX_OPSET = 17


def default_path(run: Path, fmt: str, quantize: bool) -> Path:
    if fmt == "saved_model":
        return Path(run) / "export" / "saved_model"
    if fmt == "onnx":
        return Path(run) / "export" / "model.onnx"
    return Path(run) / "export" / ("model_int8.tflite" if quantize else "model.tflite")


def sidecar_path(path: Path) -> Path:
    """The JSON beside an export that says what its outputs are (`model.tflite` -> `model.json`)."""
    return Path(path).with_suffix(".json")


def _is_dense(model) -> bool:
    return any(layer.name == "postprocess" for layer in model.layers)


def _saved_model(model, dest: Path) -> None:
    model.export(str(dest), format="tf_saved_model", verbose=False)


def _tflite(model, work: Path, *, quantize: bool, run: Path) -> bytes:
    import tensorflow as tf

    sm = work / "for_tflite"
    _saved_model(model, sm)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(sm))
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    try:
        return converter.convert()
    except Exception as e:
        raise DatatoolError(f"{run}: TFLite conversion failed ({str(e).strip().splitlines()[0]})") from e


def _onnx(model, *, run: Path) -> bytes:
    try:
        import tf2onnx
    except ImportError as e:
        raise DatatoolError('--format onnx: needs tf2onnx and onnxruntime: pip install "facekit[onnx]"') from e
    import tensorflow as tf

    size = tuple(int(d) for d in model.inputs[0].shape[1:])
    spec = (tf.TensorSpec((None, *size), tf.float32, name="image"),)
    fn = tf.function(lambda image: model(image, training=False))
    try:
        proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=ONNX_OPSET)
    except Exception as e:
        raise DatatoolError(f"{run}: ONNX conversion failed ({str(e).strip().splitlines()[0]})") from e
    return proto.SerializeToString()


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
    model, config = load_run(run)
    dense = _is_dense(model)
    part = model
    if dense and fmt != "saved_model":
        from .dense import export_model

        part = export_model(model)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=dest.parent))
    try:
        if fmt == "saved_model":
            sm = work / "saved_model"
            _saved_model(model, sm)
            if dest.exists():
                shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
            os.replace(sm, dest)
            return dest
        data = _tflite(part, work, quantize=quantize, run=run) if fmt == "tflite" else _onnx(part, run=run)
        if dense:
            from .dense import postprocess_config

            write_json_atomic(sidecar_path(dest), {
                "facekit_export": 1, "run": str(Path(run).resolve()), "format": fmt, "head": "dense",
                "input": {"size": [int(config["image_size"])] * 2 + [3], "range": "RGB 0-255"},
                "outputs": {"scores": "(1, N) face probability per cell, before NMS",
                            "boxes": "(1, N, 4) x_min, y_min, x_max, y_max normalized, per cell"},
                "postprocess": postprocess_config(model)})
        tmp = work / dest.name
        tmp.write_bytes(data)
        os.replace(tmp, dest)
        return dest
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _finish(path: Path, raw: dict) -> dict:
    """The detector's outputs from an export's raw outputs: a dense export's per-cell `scores` /
    `boxes` go through the post-processing its JSON names (the Keras model's own layer)."""
    side = sidecar_path(path)
    if "scores" in raw and "boxes" in raw and raw["scores"].ndim == 2 and raw["scores"].shape[1] > 1:
        if not side.is_file():
            raise DatatoolError(f"{side}: missing: it holds the NMS settings of the dense export {Path(path).name}")
        try:
            settings = json.loads(side.read_text(encoding="utf-8"))["postprocess"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DatatoolError(f"{side}: postprocess: cannot read the NMS settings ({e})") from e
        from .dense import postprocess

        return postprocess(raw["scores"], raw["boxes"], **settings)
    return raw


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


def run_tflite(path: Path, images, *, raw: bool = False) -> dict:
    """The detector's outputs (`presence` (n, 1) and `box` (n, 4); a dense export's `boxes` and
    `scores` too) from a TFLite export, one image at a time (float32 RGB 0-255 at the model's input
    size). `raw`: the export's own outputs, before the dense post-processing."""
    interp = tflite_interpreter(path)
    runner = interp.get_signature_runner()
    (input_name,) = runner.get_input_details().keys()
    out: dict[str, list] = {}
    for img in np.asarray(images, np.float32):
        for key, value in runner(**{input_name: img[None]}).items():
            out.setdefault(key, []).append(np.asarray(value)[0])
    stacked = {k: np.stack(v) for k, v in out.items()}
    return stacked if raw else _finish(path, stacked)


def onnx_session(path: Path):
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise DatatoolError('running ONNX needs onnxruntime: pip install "facekit[onnx]"') from e
    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:
        raise DatatoolError(f"{path}: not an ONNX model ({str(e).strip().splitlines()[0]})") from e


def run_onnx(path: Path, images, *, raw: bool = False, session=None) -> dict:
    """As `run_tflite`, for an ONNX export (onnxruntime, the whole batch at once)."""
    sess = session or onnx_session(path)
    names = [o.name for o in sess.get_outputs()]
    values = sess.run(None, {sess.get_inputs()[0].name: np.asarray(images, np.float32)})
    stacked = dict(zip(names, (np.asarray(v) for v in values)))
    return stacked if raw else _finish(path, stacked)
