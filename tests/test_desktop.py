"""Every facekit window on a real X display: an Xvfb server, the real programs, xdotool keys.

- `datatool label --detector haar` opens labelme on the first image with its prelabelled box;
- `datatool capture` from a live stream shows the countdown, then the frames; Q keeps every frame;
- `trainer predict --source` shows boxes and FPS; Q, Esc and closing the window each quit, exit 0;
- the Qt preflight stops label, capture and the live window with one message naming missing
  libraries, tested on a copy of PyQt5's xcb plugin whose library names were changed (nothing
  is uninstalled); `datatool doctor` shows the same check.

The live sources are an MJPEG stream served on localhost at 10 frames/s: like a camera, it never
ends and capture counts down on it, so a window that closes did so because of the key.

Screenshots come from Xvfb's own frame buffer (`-fbdir`: the screen as an XWD file, always
current), so no screenshot tool is needed, and are saved as PNGs under each test's tmp_path.
These tests skip only where no X server can be installed (no Xvfb binary and no apt-get); CI
installs `xvfb`, `xdotool` and the X libraries in `.ci/run`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from conftest import write_image, write_labelme_json

pytestmark = pytest.mark.slow

DEBIAN_PACKAGES = "xvfb xdotool libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0"
DATATOOL = [sys.executable, "-c", "from datatool.cli import main; main()"]
TRAINER = [sys.executable, "-c", "from trainer.cli import main; main()"]


# ---------------------------------------------------------------------------- the X server

@dataclass
class XServer:
    display: str  # ":N"
    framebuffer: Path  # Xvfb's screen as an XWD file
    env: dict  # an environment for programs shown on this display

    def screenshot(self, path: Path) -> np.ndarray:
        """The whole screen as RGB uint8 (height, width, 3), also saved as a PNG at `path`."""
        from PIL import Image

        rgb = read_xwd(self.framebuffer)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(path)
        return rgb

    def xdotool(self, *args: str, check: bool = True) -> str:
        out = subprocess.run(["xdotool", *args], env=self.env, capture_output=True, text=True, timeout=10)
        if check and out.returncode != 0:
            raise AssertionError(f"xdotool {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout.strip()

    def wait_window(self, name: str, proc, *, timeout: float = 60, own: bool = False) -> int:
        """The id of the first visible window whose title matches regex `name`; with `own`, only
        a window of `proc` itself (Qt sets _NET_WM_PID), not of a program it started."""
        deadline = time.monotonic() + timeout
        pid = ["--all", "--pid", str(proc.proc.pid)] if own else []
        while time.monotonic() < deadline:
            found = self.xdotool("search", "--onlyvisible", *pid, "--name", name, check=False).split()
            if found:
                return int(found[0])
            if proc.poll() is not None:
                raise AssertionError(f"exited with {proc.poll()} before a window {name!r} showed:\n"
                                     + proc.report())
            time.sleep(0.1)
        raise AssertionError(f"no window {name!r} within {timeout} s")

    def geometry(self, wid: int) -> tuple[int, int, int, int]:
        """(x, y, width, height) of window `wid` on the screen."""
        out = dict(line.split("=", 1) for line in self.xdotool("getwindowgeometry", "--shell", str(wid)).split())
        return int(out["X"]), int(out["Y"]), int(out["WIDTH"]), int(out["HEIGHT"])

    def key(self, wid: int, key: str) -> None:
        """Press `key` in window `wid`, as a user would: focus it, then a real key event (XTEST)."""
        self.xdotool("windowfocus", "--sync", str(wid))
        self.xdotool("key", key)

    def close(self, wid: int) -> None:
        """Ask window `wid` to close the way a window manager's close button does: a WM_DELETE_WINDOW
        client message. Debian 12's xdotool (3.20160805) has no command for it and no window
        manager runs under Xvfb, so the message is sent through libX11 directly."""
        send_wm_delete(self.display, wid)

    def visible(self, wid: int) -> bool:
        return str(wid) in self.xdotool("search", "--onlyvisible", "--name", ".", check=False).split()

    def wait_gone(self, wid: int, *, timeout: float) -> float:
        """Seconds until window `wid` is no longer shown (AssertionError after `timeout`)."""
        t0 = time.monotonic()
        while self.visible(wid):
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"window {wid} still shown after {timeout} s")
            time.sleep(0.02)
        return time.monotonic() - t0


def read_xwd(path: Path) -> np.ndarray:
    """RGB pixels of an XWD file with 32 bits per pixel (what `Xvfb -fbdir` keeps current): a
    header of 25 big-endian 32-bit fields, the window name, a colour map, then the rows."""
    data = path.read_bytes()
    fields = struct.unpack(">25I", data[:100])
    header_size, width, height = fields[0], fields[4], fields[5]
    byte_order, bits_per_pixel, bytes_per_line, ncolors = fields[7], fields[11], fields[12], fields[19]
    assert bits_per_pixel == 32, f"expected a 24-bit Xvfb screen, got {bits_per_pixel} bits per pixel"
    offset = header_size + 12 * ncolors
    rows = np.frombuffer(data, np.uint8, count=height * bytes_per_line, offset=offset).reshape(height, bytes_per_line)
    px = rows[:, :4 * width].reshape(height, width, 4)
    # red mask 0xff0000 in a 32-bit word: LSB-first files store B, G, R, pad
    return np.ascontiguousarray(px[..., 2::-1] if byte_order == 0 else px[..., 1:])


class _XClientMessage(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("serial", ctypes.c_ulong), ("send_event", ctypes.c_int),
                ("display", ctypes.c_void_p), ("window", ctypes.c_ulong), ("message_type", ctypes.c_ulong),
                ("format", ctypes.c_int), ("data", ctypes.c_long * 5)]


class _XEvent(ctypes.Union):
    _fields_ = [("xclient", _XClientMessage), ("pad", ctypes.c_long * 24)]


def send_wm_delete(display: str, wid: int) -> None:
    x11 = ctypes.CDLL(ctypes.util.find_library("X11") or "libX11.so.6")
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XInternAtom.restype = ctypes.c_ulong
    x11.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    x11.XSendEvent.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    x11.XFlush.argtypes = [ctypes.c_void_p]
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    dpy = x11.XOpenDisplay(display.encode())
    assert dpy, f"cannot open display {display}"
    try:
        event = _XEvent()
        event.xclient.type = 33  # ClientMessage
        event.xclient.window = wid
        event.xclient.message_type = x11.XInternAtom(dpy, b"WM_PROTOCOLS", 0)
        event.xclient.format = 32
        event.xclient.data[0] = x11.XInternAtom(dpy, b"WM_DELETE_WINDOW", 0)
        event.xclient.data[1] = 0  # CurrentTime
        assert x11.XSendEvent(dpy, wid, 0, 0, ctypes.byref(event))
        x11.XFlush(dpy)
    finally:
        x11.XCloseDisplay(dpy)


class Program:
    """A program started on the display, its output read as it comes, each line with the time it
    arrived (stdout unbuffered), so a test can tell when the program finished its work."""

    def __init__(self, cmd, env: dict) -> None:
        self.proc = subprocess.Popen(cmd, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.out: list[tuple[float, str]] = []
        self.err: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stdout, True), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, False), daemon=True)]
        for reader in self._readers:
            reader.start()

    def _read(self, stream, timed: bool) -> None:
        for line in stream:
            if timed:
                self.out.append((time.monotonic(), line))
            else:
                self.err.append(line)

    def poll(self):
        return self.proc.poll()

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=5)
        return code

    @property
    def stdout(self) -> str:
        return "".join(line for _, line in self.out)

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    def first_line_time(self, text: str) -> float | None:
        return next((t for t, line in self.out if text in line), None)

    def report(self) -> str:
        return f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr[-4000:]}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def xserver(tmp_path_factory):
    """An Xvfb server on a free display number (Xvfb picks it: -displayfd), stopped afterwards."""
    missing = [tool for tool in ("Xvfb", "xdotool") if shutil.which(tool) is None]
    if missing:
        if shutil.which("apt-get") is None and "Xvfb" in missing:
            pytest.skip("no X server can be installed here: no Xvfb binary and no apt-get")
        pytest.fail(f"{', '.join(missing)} not installed: sudo apt-get install {DEBIAN_PACKAGES} "
                    f"(.ci/run installs them)")
    fbdir = tmp_path_factory.mktemp("xvfb")
    home = tmp_path_factory.mktemp("home")
    read_fd, write_fd = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1280x800x24",
                               "-fbdir", str(fbdir), "-nolisten", "tcp", "-noreset"],
                              pass_fds=[write_fd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.close(write_fd)
    try:
        with os.fdopen(read_fd) as f:
            number = f.readline().strip()  # written once the server accepts connections
        assert number.isdigit(), "Xvfb did not start:\n" + server.stderr.read().decode(errors="replace")[-2000:]
        env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY")}
        env.update(DISPLAY=f":{number}", HOME=str(home), XDG_RUNTIME_DIR=str(home))
        yield XServer(f":{number}", fbdir / "Xvfb_screen0", env)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# ---------------------------------------------------------------------------- a live stream

def stream_frames(n: int = 10, *, width: int = 480, height: int = 360) -> list[bytes]:
    """JPEG frames like the training data of `trained_run`: dark noise with one bright square,
    here towards the bottom right (away from the FPS text in the top left corner)."""
    import cv2

    rng = np.random.default_rng(7)
    frames = []
    for k in range(n):
        rgb = rng.integers(0, 90, size=(height, width, 3), dtype=np.uint8)
        x0, y0 = width // 2 + 4 * k, height // 2
        rgb[y0:y0 + height // 3, x0:x0 + height // 3] = (235, 200, 170)
        frames.append(cv2.imencode(".jpg", rgb[:, :, ::-1])[1].tobytes())
    return frames


@pytest.fixture(scope="module")
def mjpeg_stream():
    """An endless MJPEG-over-HTTP stream at 10 frames/s on localhost: a live source (a camera's
    stand-in: wall-time countdown, no end) that capture and predict open by URL."""
    frames = stream_frames()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802 - http.server naming
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            k = 0
            try:
                while True:
                    data = frames[k % len(frames)]
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                     % len(data) + data + b"\r\n")
                    k += 1
                    time.sleep(0.1)
            except (BrokenPipeError, ConnectionResetError):
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/stream.mjpg"
    server.shutdown()
    server.server_close()




def _near(rgb: np.ndarray, color, tol: int = 40) -> np.ndarray:
    return (np.abs(rgb.astype(int) - np.array(color)) <= tol).all(axis=-1)


# ---------------------------------------------------------------------------- trainer predict --source

QUIT = ("q", "Escape", "close")


@pytest.fixture(scope="module")
def predict_windows(trained_run, mjpeg_stream, xserver):
    """`trainer predict RUN --source STREAM` three times at once, one per way to quit (starting
    TensorFlow three times in a row is the slow part): {how: (process, window id)}, each window
    moved to its own place on the screen."""
    procs = {how: Program([*TRAINER, "predict", str(trained_run), "--source", mjpeg_stream, "--threshold", "0"],
                          xserver.env) for how in QUIT}
    try:
        windows = {}
        for k, (how, proc) in enumerate(procs.items()):
            wid = xserver.wait_window("^trainer predict", proc, timeout=180, own=True)
            xserver.xdotool("windowmove", "--sync", str(wid), str(k * 400), str(k * 200))
            windows[how] = (proc, wid)
        yield windows
    finally:
        for proc in procs.values():
            proc.stop()


def _wait_frame(xserver: XServer, wid: int, proc, path: Path, *, timeout: float = 60) -> np.ndarray:
    """A screenshot of window `wid` once it shows a frame (not an empty window)."""
    deadline = time.monotonic() + timeout
    while True:
        x, y, w, h = xserver.geometry(wid)
        if w >= 200 and h >= 150:
            shot = xserver.screenshot(path)[y:y + h, x:x + w]
            if shot.std() > 10:
                return shot
        assert proc.poll() is None, "exited before showing a frame:\n" + proc.report()
        assert time.monotonic() < deadline, f"no frame shown within {timeout} s"
        time.sleep(0.2)


@pytest.mark.parametrize("how", QUIT)
def test_predict_live_window_shows_boxes_and_fps_and_quits(how, predict_windows, xserver, tmp_path):
    proc, wid = predict_windows[how]
    shot = _wait_frame(xserver, wid, proc, tmp_path / "screenshots" / f"predict-{how}.png")
    h, w = shot.shape[:2]
    assert (w, h) == (480, 360)  # the stream's frames, unscaled
    # the best box (threshold 0) in the first colour of datatool.core.draw.PALETTE
    assert _near(shot, (0, 200, 83)).sum() > 150
    # the FPS line: white text with a dark shadow in the top-left corner; the frames are dark noise
    corner = shot[: h // 8, : w // 2]
    assert _near(corner, (255, 255, 255), tol=30).sum() > 40
    assert proc.poll() is None
    if how == "close":
        xserver.close(wid)
    else:
        xserver.key(wid, how)
    asked = time.monotonic()
    assert xserver.wait_gone(wid, timeout=1.0) <= 1.0
    code = proc.wait(timeout=60)
    assert code == 0, proc.report()
    # the command has finished its work (the loop ended, the summary is out) within a second;
    # the interpreter's exit after it is TensorFlow's teardown, seconds on a busy machine
    done = proc.first_line_time("FPS")
    assert done is not None and done - asked <= 1.0, proc.report()
    assert "Traceback" not in proc.stderr and "free()" not in proc.stderr


# ---------------------------------------------------------------------------- datatool capture

def test_capture_preview_shows_countdown_then_frames_and_q_keeps_them(mjpeg_stream, xserver, tmp_path):
    from PIL import Image

    from datatool.core.provenance import capture_info

    ds = tmp_path / "ds"
    shots = tmp_path / "screenshots"
    # no --preview flag: the window is on by default where a display is available
    proc = Program([*DATATOOL, "capture", str(ds), "--source", mjpeg_stream, "--countdown", "3",
                    "--interval", "0.2", "--count", "0"], xserver.env)
    try:
        wid = xserver.wait_window("^facekit capture", proc, timeout=60)
        countdown = _wait_frame(xserver, wid, proc, shots / "capture-countdown.png")
        h, w = countdown.shape[:2]
        assert (w, h) == (480, 360)
        assert not list(ds.glob("images/*.jpg")), "frames saved during the countdown"
        # the countdown digit: big white text in the middle of the frame (the frames are dark noise
        # with a skin-coloured square, no white)
        middle = countdown[h // 4: 3 * h // 4, w // 3: 2 * w // 3]
        assert _near(middle, (255, 255, 255), tol=30).sum() > 300
        deadline = time.monotonic() + 30
        while len(list(ds.glob("images/*.jpg"))) < 4:
            assert proc.poll() is None, proc.report()
            assert time.monotonic() < deadline, "no frames saved after the countdown"
            time.sleep(0.1)
        frames = _wait_frame(xserver, wid, proc, shots / "capture-frames.png")
        middle = frames[h // 4: 3 * h // 4, w // 3: 2 * w // 3]
        assert _near(middle, (255, 255, 255), tol=30).sum() < 50  # countdown over
        assert _near(frames, (235, 200, 170), tol=30).sum() > 2000  # the stream's frame is shown
        assert _near(frames[: h // 8, : w // 3], (255, 255, 255), tol=30).sum() > 20  # the counter
        xserver.key(wid, "q")
        assert xserver.wait_gone(wid, timeout=1.0) <= 1.0
        assert proc.wait(timeout=30) == 0, proc.report()
    finally:
        proc.stop()
    saved = sorted(ds.glob("images/*.jpg"))
    assert f"Saved {len(saved)} frames" in proc.stdout, proc.report()
    assert "Stopped from the preview window." in proc.stderr
    for path in saved:  # every frame written before Q is a complete, stamped JPEG
        with Image.open(path) as im:
            im.load()
            assert im.size == (480, 360)
        assert capture_info(path)["session"]
    assert not list(ds.rglob("*.tmp*")) and not list(ds.rglob(".*"))
# ---------------------------------------------------------------------------- datatool label

FRAME = 8  # a pure blue border around the photo: where labelme draws the image, and at what zoom
LABELME_FIRST_LABEL = (128, 0, 0)  # labelme colours the first label with imgviz's colormap entry 1


@pytest.fixture
def label_dataset(tmp_path) -> Path:
    """images/: the astronaut photo in a blue frame (labelme opens it first), a noise image with no
    face, and a hand-labelled image whose JSON must never change."""
    from PIL import Image
    from skimage import data

    images = tmp_path / "ds" / "images"
    images.mkdir(parents=True)
    photo = np.pad(data.astronaut(), ((FRAME, FRAME), (FRAME, FRAME), (0, 0)))
    for side in (np.s_[:FRAME], np.s_[-FRAME:], np.s_[:, :FRAME], np.s_[:, -FRAME:]):
        photo[side] = (0, 0, 255)
    Image.fromarray(photo).save(images / "a_astronaut.png")
    write_image(images / "b_noise.png", 120, 90, seed=3)
    human = write_image(images / "human.jpg", 64, 48, seed=4)
    write_labelme_json(human, [[1, 2, 30, 40]], width=64, height=48)
    return tmp_path / "ds"


def _edge_hits(shot: np.ndarray, color, *, row: float | None = None, col: float | None = None,
               span: tuple[float, float]) -> float:
    """The share of positions along a horizontal (`row`) or vertical (`col`) segment where a pixel
    within 2 px across the line has `color`."""
    lo, hi = int(round(span[0])) + 6, int(round(span[1])) - 6  # keep clear of the corner handles
    hits = _near(shot, color, tol=50)
    if row is not None:
        r = int(round(row))
        return float(hits[r - 2:r + 3, lo:hi].any(axis=0).mean())
    c = int(round(col))
    return float(hits[lo:hi, c - 2:c + 3].any(axis=1).mean())


def _boxes_not_drawn(shot: np.ndarray, boxes) -> str | None:
    """What is wrong with labelme's picture of the framed photo and its `boxes` (None: all right).

    The blue frame gives where the photo is and its zoom; each box (pixels of the framed photo)
    must then have its four edges in the label's colour, and the photo (not the colour) across
    its middle."""
    frame = _near(shot, (0, 0, 255), tol=40)
    if frame.sum() < 1000:
        return "the photo is not shown"
    rows, cols = np.nonzero(frame)
    left, top, right, bottom = cols.min(), rows.min(), cols.max() + 1, rows.max() + 1
    scale = (right - left) / (512 + 2 * FRAME)
    if abs((bottom - top) / (right - left) - 1) > 0.01:
        return f"the square photo is shown {right - left}x{bottom - top}"
    color = LABELME_FIRST_LABEL
    for box in boxes:
        sx0, sy0 = left + box.x_min * scale, top + box.y_min * scale
        sx1, sy1 = left + box.x_max * scale, top + box.y_max * scale
        for edge in (dict(row=sy0, span=(sx0, sx1)), dict(row=sy1, span=(sx0, sx1)),
                     dict(col=sx0, span=(sy0, sy1)), dict(col=sx1, span=(sy0, sy1))):
            if _edge_hits(shot, color, **edge) < 0.9:
                return f"no edge of box {box.xyxy} at {edge} on screen"
        if _edge_hits(shot, color, row=(sy0 + sy1) / 2, span=(sx0, sx1)) > 0.2:
            return f"box {box.xyxy} is filled with its colour"
    return None


def test_label_opens_labelme_on_the_first_image_with_its_prelabelled_box(label_dataset, xserver, tmp_path):
    from datatool.formats.labelme import read_labelme

    images = label_dataset / "images"
    human_json = images / "human.json"
    human_before = human_json.read_bytes()
    proc = Program([*DATATOOL, "label", str(label_dataset), "--detector", "haar"], xserver.env)
    try:
        wid = xserver.wait_window("^Labelme - ", proc, timeout=90)
        photo_json = images / "a_astronaut.json"
        photo_before = photo_json.read_bytes()  # prelabel wrote it before labelme started
        boxes = read_labelme(photo_json).boxes
        assert boxes
        deadline = time.monotonic() + 30
        while True:  # until labelme has painted the photo and its boxes
            x, y, w, h = xserver.geometry(wid)
            shot = xserver.screenshot(tmp_path / "screenshots" / "labelme.png")[y:y + h, x:x + w]
            problem = _boxes_not_drawn(shot, boxes)
            if problem is None:
                break
            assert proc.poll() is None, proc.report()
            assert time.monotonic() < deadline, f"after 30 s: {problem}"
            time.sleep(0.3)
        assert proc.poll() is None
        xserver.close(wid)
        assert proc.wait(timeout=30) == 0, proc.report()
    finally:
        proc.stop()
    assert "labelme closed: 2 labeled, 1 unlabeled image(s)" in proc.stdout, proc.report()
    assert photo_json.read_bytes() == photo_before and human_json.read_bytes() == human_before
    assert sorted(p.name for p in images.glob("*.json")) == ["a_astronaut.json", "human.json"]
# ---------------------------------------------------------------------------- the Qt preflight

@pytest.mark.parametrize("soname,package", [
    ("libxcb-icccm.so.4", "libxcb-icccm4"),  # the three PyQt5 needs that a desktop often lacks
    ("libxcb-keysyms.so.1", "libxcb-keysyms1"),
    ("libxcb-xinerama.so.0", "libxcb-xinerama0"),
    ("libxkbcommon-x11.so.0", "libxkbcommon-x11-0"),  # name ends in a digit: a dash before the version
    ("libglib-2.0.so.0", "libglib2.0-0"),  # a package named otherwise: the table knows
    ("libfoo.so.3", "libfoo3"),  # not in the table: Debian's naming rule
    ("libFoo2.so.1", "libfoo2-1"),  # ... lower case, dash after a digit
])
def test_debian_package_for_a_missing_library(soname, package):
    from datatool.core.qtcheck import debian_package

    assert debian_package(soname) == package


@pytest.mark.parametrize("env,platform,ok,says", [
    ({"QT_QPA_PLATFORM": "offscreen"}, "linux", True, ""),  # draws into memory: needs nothing
    ({"QT_QPA_PLATFORM": "minimal", "DISPLAY": ":5"}, "linux", True, ""),
    ({}, "linux", False, "DISPLAY is not set"),  # a server
    ({"WAYLAND_DISPLAY": "wayland-0"}, "linux", False, "XWayland"),  # Qt 5 needs X unless told
    ({"QT_QPA_PLATFORM": "wayland"}, "linux", False, "WAYLAND_DISPLAY is not set"),
    ({}, "win32", True, ""),  # the wheels carry the Windows and macOS plugins
])
def test_preflight_without_starting_qt(env, platform, ok, says):
    from datatool.core.qtcheck import preflight

    check = preflight(env, platform=platform)
    assert check.ok is ok and says in check.problem


def test_preflight_passes_on_the_x_server(xserver):
    from datatool.core.qtcheck import preflight

    check = preflight(xserver.env)
    assert check.ok, check.problem
    assert (check.platform, check.detail) == ("xcb", f"DISPLAY={xserver.display}")


def test_preflight_reports_an_x_server_that_is_not_there(xserver):
    from datatool.core.qtcheck import preflight

    check = preflight({**xserver.env, "DISPLAY": ":987"})  # libraries fine, nobody listening
    assert not check.ok and not check.missing
    assert "could not connect to display :987" in check.problem and "Aborted" not in check.problem


RENAMED = {"libxcb-icccm.so.4": "libxcb-icccm.so.9", "libxcb-keysyms.so.1": "libxcb-keysyms.so.9",
           "libxcb-xinerama.so.0": "libxcb-xinerama.so.9"}


@pytest.fixture(scope="module")
def broken_qt_env(xserver, tmp_path_factory) -> dict:
    """The X display's environment with Qt pointed at a copy of PyQt5's xcb plugin that needs
    three libraries no system has: the names of the three usually missing ones with another
    version (same length, so the copy stays a valid ELF file). Qt looks in
    QT_QPA_PLATFORM_PLUGIN_PATH first; LD_LIBRARY_PATH finds the Qt libraries the original finds
    through its relative RUNPATH. Nothing is uninstalled."""
    import PyQt5

    qt = Path(PyQt5.__file__).parent / "Qt5"
    data = (qt / "plugins" / "platforms" / "libqxcb.so").read_bytes()
    for name, other in RENAMED.items():
        assert data.count(name.encode() + b"\0"), f"libqxcb.so does not need {name}"
        data = data.replace(name.encode() + b"\0", other.encode() + b"\0")
    platforms = tmp_path_factory.mktemp("qt-plugins") / "platforms"
    platforms.mkdir()
    (platforms / "libqxcb.so").write_bytes(data)
    return {**xserver.env, "QT_QPA_PLATFORM_PLUGIN_PATH": str(platforms),
            "LD_LIBRARY_PATH": os.pathsep.join(filter(None, [str(qt / "lib"), xserver.env.get("LD_LIBRARY_PATH")]))}


def test_preflight_names_the_missing_libraries_and_the_install_command(broken_qt_env):
    from datatool.core.qtcheck import preflight

    check = preflight(broken_qt_env)
    assert not check.ok
    assert list(check.missing) == list(RENAMED.values())
    assert "sudo apt-get install libxcb-icccm9 libxcb-keysyms9 libxcb-xinerama9" in check.problem
    assert "Elsewhere" in check.problem and "dnf provides" in check.problem


def _one_clear_error(proc: Program) -> str:
    output = proc.stdout + proc.stderr
    assert output.count("Error:") == 1, proc.report()
    for noise in ("qt.qpa", "Aborted", "core dumped", "Traceback", "This application failed to start"):
        assert noise not in output, proc.report()
    assert all(name in output for name in RENAMED.values()), proc.report()
    assert "sudo apt-get install libxcb-icccm9 libxcb-keysyms9 libxcb-xinerama9" in output
    return output


def test_label_stops_with_one_message_when_qt_cannot_start(broken_qt_env, label_dataset):
    proc = Program([*DATATOOL, "label", str(label_dataset), "--detector", "haar"], broken_qt_env)
    assert proc.wait(timeout=60) == 1
    assert "cannot show labelme" in _one_clear_error(proc)
    # stopped before prelabelling: only the hand-made JSON is there
    assert [p.name for p in (label_dataset / "images").glob("*.json")] == ["human.json"]


def test_capture_preview_stops_with_one_message_when_qt_cannot_start(broken_qt_env, tmp_path):
    src = tmp_path / "src"
    write_image(src / "a.jpg")
    proc = Program([*DATATOOL, "capture", str(tmp_path / "ds"), "--source", str(src)], broken_qt_env)
    assert proc.wait(timeout=60) == 1
    assert "--no-preview" in _one_clear_error(proc)
    assert not list((tmp_path / "ds").rglob("*.jpg"))


# trainer's live loop with a step that draws nothing: the window `trainer predict --source` opens,
# without loading TensorFlow and a model first (the real command loads its model before the window)
LIVE = """
import sys
from datatool.core.errors import DatatoolError
from trainer import liveview
try:
    liveview.run(sys.argv[1], "trainer predict - test", lambda rgb: (rgb, ""))
except DatatoolError as e:
    print(f"Error: {e}", file=sys.stderr)
    sys.exit(1)
"""


def test_predict_live_window_stops_with_one_message_when_qt_cannot_start(broken_qt_env, mjpeg_stream):
    proc = Program([sys.executable, "-c", LIVE, mjpeg_stream], broken_qt_env)
    assert proc.wait(timeout=60) == 1
    assert "cannot show the preview window" in _one_clear_error(proc)


def test_doctor_shows_the_same_preflight(xserver, broken_qt_env):
    from datatool.doctor import check_qt

    good = check_qt(xserver.env)
    assert good.status == "ok" and xserver.display in good.detail
    bad = check_qt(broken_qt_env)
    assert bad.status == "warn" and not bad.required  # a machine without windows still works
    assert "sudo apt-get install libxcb-icccm9 libxcb-keysyms9 libxcb-xinerama9" in bad.detail
