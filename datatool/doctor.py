"""`datatool doctor`: is this machine ready for facekit? One check per part of the toolchain.

Each check returns a `Check` with a status: `ok`, `warn` (works, with a limit worth knowing),
`fail` (broken) or `info`. Only a failing *required* check (Python, OpenCV with its Haar cascade,
TensorFlow, free disk) makes the command exit 1: a server with no display or no camera is a
normal place to run `datatool`, so the Qt/display and camera checks only warn. The Qt check is
the preflight the windows run (`datatool.core.qtcheck`), so doctor and `datatool label` agree.

TensorFlow is imported in a subprocess: a build the CPU cannot run dies with SIGILL, which
would take the doctor down with it.
"""

from __future__ import annotations

import os
import platform as _platform
import shutil
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

STATUSES = ("ok", "info", "warn", "fail")
CAMERA_TIMEOUT_S = 3.0
TF_TIMEOUT_S = 180.0
LOW_DISK = 2 * 1024**3  # warn: a few augmented datasets and a run or two need more
NO_DISK = 100 * 1024**2  # fail: not even a capture session fits


@dataclass(frozen=True)
class Check:
    """One line of the doctor's table."""

    name: str
    status: str  # one of STATUSES
    detail: str
    required: bool = False

    @property
    def broken(self) -> bool:
        """A required part that does not work: the doctor exits 1."""
        return self.required and self.status == "fail"


def _requirement(package: str) -> str | None:
    """facekit's own requirement for `package` (e.g. 'labelme==6.3.1'), read from its installed
    metadata so pyproject.toml stays the one place it is written; None when not found."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    try:
        requires = metadata.requires("facekit") or []
    except metadata.PackageNotFoundError:
        return None
    for line in requires:
        req = Requirement(line)
        if canonicalize_name(req.name) == canonicalize_name(package) and "extra" not in str(req.marker or ""):
            return f"{req.name}{req.specifier}"
    return None


def check_python() -> Check:
    from importlib import metadata

    version = _platform.python_version()
    try:
        spec = metadata.metadata("facekit").get("Requires-Python")
    except metadata.PackageNotFoundError:
        spec = None
    if spec:
        from packaging.specifiers import SpecifierSet

        if version not in SpecifierSet(spec):
            return Check("python", "fail", f"{version} ({sys.executable}); facekit needs {spec}", True)
    return Check("python", "ok", f"{version} ({sys.executable})", True)


def check_opencv() -> Check:
    try:
        import cv2
    except ImportError as e:
        return Check("opencv", "fail", f"cannot import cv2 ({e}): pip install 'opencv-python-headless<5'", True)
    from .core.detect import HAAR_CASCADE

    path = Path(cv2.data.haarcascades) / HAAR_CASCADE if hasattr(cv2, "data") else Path(HAAR_CASCADE)
    if not path.is_file():
        return Check("opencv", "fail", f"{cv2.__version__}, but its Haar cascade {HAAR_CASCADE} is missing "
                                       f"(OpenCV 5 dropped it: pip install 'opencv-python-headless<5')", True)
    if cv2.CascadeClassifier(str(path)).empty():
        return Check("opencv", "fail", f"{cv2.__version__}: {path} does not load", True)
    return Check("opencv", "ok", f"{cv2.__version__}, Haar cascade {path}", True)


def check_tensorflow(*, timeout: float = TF_TIMEOUT_S) -> Check:
    code = ("import os, sys\n"
            "os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')\n"
            "import tensorflow as tf\n"
            "gpus = tf.config.list_physical_devices('GPU')\n"
            "sys.stdout.write(f'{tf.__version__} {len(gpus)}')\n")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Check("tensorflow", "fail", f"`import tensorflow` did not finish within {timeout:g} s", True)
    if out.returncode != 0:
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        why = lines[-1] if lines else f"exit status {out.returncode}"
        if out.returncode < 0:
            why = f"killed by signal {-out.returncode} (a TensorFlow build this CPU cannot run?)"
        return Check("tensorflow", "fail", f"cannot import tensorflow: {why}; pip install "
                                           f"'{_requirement('tensorflow') or 'tensorflow'}'", True)
    version, _, gpus = out.stdout.strip().rpartition(" ")
    where = f"{gpus} GPU(s)" if gpus not in ("", "0") else "CPU only"
    return Check("tensorflow", "ok", f"{version}, {where}", True)


def check_labelme() -> Check:
    import importlib.util
    from importlib import metadata

    pinned = _requirement("labelme") or "labelme"
    if importlib.util.find_spec("labelme") is None:
        return Check("labelme", "warn", f"not installed (needed by `datatool label` only): pip install '{pinned}'")
    version = metadata.version("labelme")
    if "==" in pinned and pinned.split("==", 1)[1] != version:
        return Check("labelme", "warn", f"{version}, facekit is tested with {pinned}: pip install '{pinned}'")
    return Check("labelme", "ok", version)


def check_qt(environ=None) -> Check:
    """The windows' preflight (`core.qtcheck.preflight`): can Qt open a window on this display?"""
    from .core.qtcheck import NO_DISPLAY_PLATFORMS, preflight

    check = preflight(environ)
    if not check.ok:
        return Check("qt/display", "warn", f"windows (label, capture preview, predict --source) cannot open: "
                                           f"{check.problem}")
    if check.platform in NO_DISPLAY_PLATFORMS:
        return Check("qt/display", "info", f"{check.detail}: windows draw off screen")
    return Check("qt/display", "ok", f"Qt platform '{check.platform}' starts ({check.detail})")


def _open_camera(index, timeout: float) -> tuple[bool, str]:
    """Open camera `index` and read one frame, in a daemon thread: a driver that hangs costs
    `timeout` seconds, not the doctor."""
    import cv2

    box: dict = {}

    def work():
        cap = cv2.VideoCapture(index)
        try:
            ok, frame = cap.read() if cap.isOpened() else (False, None)
            box["result"] = (bool(ok and frame is not None),
                             f"{frame.shape[1]}x{frame.shape[0]}" if ok and frame is not None else "")
        finally:
            cap.release()

    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        thread.join(timeout)
    finally:
        cv2.utils.logging.setLogLevel(level)
    if thread.is_alive():
        return False, "timed out"
    return box.get("result", (False, ""))


def check_cameras(*, timeout: float = CAMERA_TIMEOUT_S, platform: str | None = None) -> Check:
    """Camera indexes that open and deliver a frame. Linux: the /dev/video* devices; elsewhere
    indexes 0-2 (there is no device list to read)."""
    platform = platform or sys.platform
    if platform.startswith("linux"):
        devices = sorted(Path("/dev").glob("video[0-9]*"), key=lambda p: int(p.name[5:]))
        indexes = [int(p.name[5:]) for p in devices]
        if not indexes:
            return Check("cameras", "info", "none (no /dev/video*): capture from a video or folder with --source")
    else:
        indexes = [0, 1, 2]
    working, failed = [], []
    for index in indexes:
        ok, what = _open_camera(index, timeout)
        (working if ok else failed).append(f"{index} ({what})" if what else str(index))
    if working:
        return Check("cameras", "ok", "--source " + ", ".join(working)
                     + (f"; not opening: {', '.join(failed)}" if failed else ""))
    return Check("cameras", "info", f"none opens (tried {', '.join(failed)}): capture from a video or folder "
                                    f"with --source")


def check_disk(path: Path | str = ".") -> Check:
    usage = shutil.disk_usage(path)
    free = f"{usage.free / 1024**3:.1f} GiB free in {Path(path).resolve()}"
    if usage.free < NO_DISK:
        return Check("disk", "fail", free, True)
    if usage.free < LOW_DISK:
        return Check("disk", "warn", f"{free}: augmented datasets and runs take gigabytes", True)
    return Check("disk", "ok", free, True)


def keras_models_dir(environ=None) -> Path:
    """Where Keras caches downloaded weights: $KERAS_HOME/models, else ~/.keras/models."""
    env = os.environ if environ is None else environ
    home = env.get("KERAS_HOME")
    return (Path(home) if home else Path(env.get("HOME") or Path.home()) / ".keras") / "models"


# Keras' file names for the backbones `trainer fit` uses (see trainer.weights.imagenet_filename).
IMAGENET_PATTERNS = ("mobilenet_v2_weights_tf_dim_ordering_tf_kernels_*_no_top.h5",
                     "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")


def check_imagenet_weights(environ=None) -> Check:
    folder = keras_models_dir(environ)
    found = sorted(p.name for pattern in IMAGENET_PATTERNS for p in folder.glob(pattern))
    if not found:
        return Check("imagenet weights", "info", f"none cached in {folder}: the first `trainer fit` downloads "
                                                 f"them (needs internet), or use --weights none / a file")
    return Check("imagenet weights", "ok", f"{len(found)} cached in {folder}: {', '.join(found)}")


def run_checks(*, path: Path | str = ".", environ=None, camera_timeout: float = CAMERA_TIMEOUT_S) -> list[Check]:
    """Every check, in the order the doctor prints them."""
    return [
        check_python(),
        check_tensorflow(),
        check_opencv(),
        check_labelme(),
        check_qt(environ),
        check_cameras(timeout=camera_timeout),
        check_disk(path),
        check_imagenet_weights(environ),
    ]


def report(checks: list[Check]) -> dict:
    """The JSON form: `ok` (no required check broken) and the checks."""
    return {"ok": not any(c.broken for c in checks), "checks": [asdict(c) for c in checks]}
