"""The live window of `trainer predict --source`: datatool's Qt preview (headless OpenCV has no
`imshow`), with the same "is there a display" rule."""

from __future__ import annotations

import os
import sys


def display_available() -> bool:
    """A GUI platform and, on Linux, a display server (`QT_QPA_PLATFORM=offscreen` counts as none)."""
    try:
        from datatool.qtview import display_available as qt_display_available
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
    from datatool.qtview import PreviewWindow

    return PreviewWindow(title)
