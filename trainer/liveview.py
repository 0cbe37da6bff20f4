"""The live window of `trainer predict --source`: datatool's Qt preview (headless OpenCV has no
`imshow`), with the same "is there a display" rule."""

from __future__ import annotations

import os
import sys


def display_available() -> bool:
    """A GUI platform and, on Linux, a display server (`QT_QPA_PLATFORM=offscreen` counts as none)."""
    try:
        from datatool.core.qtview import display_available as qt_display_available
    except ImportError:  # pragma: no cover - the same rule, should datatool's preview be absent
        qpa = (os.environ.get("QT_QPA_PLATFORM") or "").split(":")[0].lower()
        if qpa in ("offscreen", "minimal", "vnc"):
            return False
        if sys.platform.startswith("linux"):
            return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
        return True
    return qt_display_available()


def open_window(title: str):
    """A window with `show(rgb, corner=text)`, `poll() -> keep going` (False after Q/Esc/close), `close()`."""
    from datatool.core.qtview import PreviewWindow

    return PreviewWindow(title)


NO_DISPLAY = ("no display: the live window needs a desktop session (DISPLAY or WAYLAND_DISPLAY set, "
              "QT_QPA_PLATFORM not 'offscreen')")


def require_display(instead: str) -> None:
    """Fail fast, before any model loads, when no window can be shown; `instead` says what to do."""
    from datatool.core.errors import DatatoolError
    from datatool.core.qtcheck import require_qt

    if not display_available():
        raise DatatoolError(f"{NO_DISPLAY}; {instead}")
    require_qt(what="the live window")  # missing X libraries: say so before a model loads


def run(source: str, title: str, step, *, max_frames: int | None = None) -> dict:
    """Show a camera (index or device path) or a video in a window, each frame passed through
    `step(rgb) -> (rgb_to_show, text)`; the text goes in a corner after the FPS. Q or Esc quits."""
    import time

    import cv2
    import numpy as np

    from datatool.core.errors import DatatoolError

    cap = cv2.VideoCapture(int(source) if str(source).isdigit() else str(source))
    if not cap.isOpened():
        raise DatatoolError(f"--source {source}: cannot open camera or video")
    window = open_window(title)
    frames, t0, fps = 0, time.perf_counter(), 0.0
    try:
        while window.poll():
            ok, bgr = cap.read()
            if not ok:
                break
            rgb = np.ascontiguousarray(bgr[:, :, ::-1])
            t = time.perf_counter()
            shown, text = step(rgb)
            dt = time.perf_counter() - t
            fps = 0.9 * fps + 0.1 / max(dt, 1e-6) if frames else 1 / max(dt, 1e-6)
            window.show(shown, corner=f"{fps:.1f} FPS  {text}")
            frames += 1
            if max_frames and frames >= max_frames:
                break
    finally:
        cap.release()
        window.close()
    return {"frames": frames, "seconds": time.perf_counter() - t0, "fps": fps}
