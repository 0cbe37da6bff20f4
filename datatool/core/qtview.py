"""A small Qt live-preview window (used by `datatool capture` and `trainer predict --source`).

The headless OpenCV build facekit installs has no `imshow`, and labelme already brings PyQt5,
so the preview is a plain Qt window showing RGB frames with an optional overlay: a big
centred line (a countdown) and a small corner line (a frame counter). Closing the window or
pressing Esc/Q asks the caller to stop.

`display_available()` decides whether a window can be shown at all; `open_preview()` turns
"no display" or a Qt failure into `None` (with a reason) instead of crashing a headless machine.
Before the first window, `qtcheck.require_qt()` makes sure Qt can start on the display: a missing
system library would otherwise abort the process (see `datatool.core.qtcheck`).
"""

from __future__ import annotations

import os
import sys

HEADLESS_PLATFORMS = ("offscreen", "minimal", "vnc")


def display_available(environ=None, platform: str | None = None) -> bool:
    """Whether a window could be shown: a GUI platform plugin and, on Linux, a display server.

    `QT_QPA_PLATFORM=offscreen` (tests, CI) counts as no display.
    """
    env = os.environ if environ is None else environ
    platform = platform or sys.platform
    qpa = (env.get("QT_QPA_PLATFORM") or "").split(":")[0].strip().lower()
    if qpa in HEADLESS_PLATFORMS:
        return False
    if platform.startswith("linux") or "bsd" in platform:
        return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))
    return True  # Windows and macOS always have a window server for a logged-in user


def _app():
    from PyQt5 import QtWidgets

    app = QtWidgets.QApplication.instance()
    if app is None:
        from .qtcheck import require_qt

        require_qt(what="the preview window")  # a clear error instead of Qt's abort
        # The preview paints pixmaps and needs no OpenGL. With TensorFlow loaded first (trainer
        # predict, mtcnn), Qt's GLX integration corrupts the heap at exit: "free(): invalid
        # pointer", exit status -6 after a clean run. Without it Qt falls back to plain X drawing.
        os.environ.setdefault("QT_XCB_GL_INTEGRATION", "none")
        app = QtWidgets.QApplication([sys.argv[0] if sys.argv else "facekit"])
    return app


class PreviewWindow:
    """A window that shows RGB uint8 frames. `show()` draws a frame, `poll()` says whether to go on.

    Works under any Qt platform, `offscreen` included (nothing appears, nothing breaks).
    """

    def __init__(self, title: str = "facekit", *, max_side: int = 960) -> None:
        from PyQt5 import QtCore, QtWidgets

        self._app = _app()
        self._stop = False
        self.max_side = max_side
        preview = self

        class _Label(QtWidgets.QLabel):
            def keyPressEvent(self, event):  # noqa: N802 - Qt naming
                if event.key() in (QtCore.Qt.Key_Escape, QtCore.Qt.Key_Q):
                    preview._stop = True
                super().keyPressEvent(event)

            def closeEvent(self, event):  # noqa: N802 - Qt naming
                preview._stop = True
                super().closeEvent(event)

        self._label = _Label()
        self._label.setWindowTitle(f"{title}  (Esc or Q to stop)")
        self._label.setAlignment(QtCore.Qt.AlignCenter)
        self._label.setFocusPolicy(QtCore.Qt.StrongFocus)
        self._label.show()
        self._app.processEvents()

    @property
    def stopped(self) -> bool:
        """True once the user closed the window or pressed Esc/Q (or `close()` was called)."""
        return self._stop

    @property
    def shown_size(self) -> tuple[int, int]:
        """(width, height) of the pixmap last shown, (0, 0) before the first frame."""
        pix = self._label.pixmap()
        return (pix.width(), pix.height()) if pix is not None else (0, 0)

    def show(self, rgb, *, big: str | None = None, corner: str | None = None) -> None:
        """Show an RGB uint8 frame (shrunk to `max_side`), `big` text centred, `corner` text top-left."""
        import numpy as np
        from PyQt5 import QtCore, QtGui

        if self._stop:
            return
        arr = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"preview expects an RGB array of shape (height, width, 3), got {arr.shape}")
        h, w = arr.shape[:2]
        # QImage wraps the buffer without copying: copy() so the pixmap owns its pixels.
        image = QtGui.QImage(arr.data, w, h, 3 * w, QtGui.QImage.Format_RGB888).copy()
        scale = min(1.0, self.max_side / max(h, w))
        if scale < 1.0:
            image = image.scaled(max(1, round(w * scale)), max(1, round(h * scale)),
                                 QtCore.Qt.IgnoreAspectRatio, QtCore.Qt.SmoothTransformation)
        pixmap = QtGui.QPixmap.fromImage(image)
        if big or corner:
            painter = QtGui.QPainter(pixmap)
            try:
                painter.setRenderHint(QtGui.QPainter.Antialiasing)
                if big:
                    self._text(painter, pixmap, big, size=max(18, pixmap.height() // 4),
                               flags=QtCore.Qt.AlignCenter)
                if corner:
                    self._text(painter, pixmap, corner, size=max(10, pixmap.height() // 24),
                               flags=QtCore.Qt.AlignLeft | QtCore.Qt.AlignTop)
            finally:
                painter.end()
        self._label.setPixmap(pixmap)
        self._label.resize(pixmap.width(), pixmap.height())
        self._app.processEvents()

    @staticmethod
    def _text(painter, pixmap, text: str, *, size: int, flags) -> None:
        from PyQt5 import QtCore, QtGui

        font = QtGui.QFont()
        font.setPixelSize(size)
        font.setBold(True)
        painter.setFont(font)
        rect = QtCore.QRect(8, 6, pixmap.width() - 16, pixmap.height() - 12)
        painter.setPen(QtGui.QColor(0, 0, 0))  # a dark shadow keeps text legible on any frame
        painter.drawText(rect.translated(2, 2), int(flags), text)
        painter.setPen(QtGui.QColor(255, 255, 255))
        painter.drawText(rect, int(flags), text)

    def poll(self) -> bool:
        """Handle pending window events; False once the user asked to stop."""
        self._app.processEvents()
        return not self._stop

    def close(self) -> None:
        if self._label is not None:
            self._label.close()
            self._label.deleteLater()
            self._app.processEvents()
            self._label = None  # type: ignore[assignment]
        self._stop = True

    def __enter__(self) -> "PreviewWindow":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_preview(enabled: bool | None, *, title: str = "facekit") -> tuple[PreviewWindow | None, str]:
    """A preview window, or `(None, reason)`.

    `enabled=None` means automatic: on when `display_available()`, off otherwise.
    `enabled=True` without a display falls back to no preview (with a reason), never an error.
    A display on which Qt cannot start (missing system libraries, no X server) is an error
    (`DatatoolError` naming what to install): the user expects a window there.
    """
    if enabled is False:
        return None, "preview off (--no-preview)"
    if not display_available():
        return None, "no display found (DISPLAY/WAYLAND_DISPLAY unset or QT_QPA_PLATFORM=offscreen): preview off"
    from .errors import DatatoolError
    from .qtcheck import preflight

    check = preflight()
    if not check.ok:
        raise DatatoolError(f"cannot show the preview window: {check.problem}\n"
                            f"(or capture without it: --no-preview)")
    try:
        return PreviewWindow(title), ""
    except Exception as e:  # a broken Qt install must not stop a capture
        return None, f"preview off: cannot open a Qt window ({type(e).__name__}: {e})"
