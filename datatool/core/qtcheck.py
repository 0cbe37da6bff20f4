"""Can Qt open a window here? A preflight run before any facekit window (labelme, the capture
preview, `trainer predict --source`) and by `datatool doctor`.

Without it, a missing system library makes Qt abort the whole process (`Could not load the Qt
platform plugin "xcb"`, then SIGABRT) with a dump that names no library. PyQt5's wheels bundle
Qt but not the X11 client libraries its `xcb` platform plugin links to; on a fresh Ubuntu or
Debian desktop `libxcb-icccm4`, `libxcb-keysyms1` and `libxcb-xinerama0` are the usual missing
ones. So the preflight asks the plugin itself, in two steps:

1. `ldd` of the platform plugin (Linux): every `NAME => not found` line is a missing library,
   mapped to its Debian/Ubuntu package for one `apt-get install` line;
2. a tiny Qt program in a subprocess that creates the application on this display, so anything
   else (no X server at DISPLAY, refused authorization) comes back as a message, not an abort.

A platform that needs no display (`QT_QPA_PLATFORM=offscreen` or `minimal`) needs nothing.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

# Platforms that draw into memory: no display server, no X libraries.
NO_DISPLAY_PLATFORMS = ("offscreen", "minimal")

# Qt platform name -> its plugin file in PyQt5/Qt5/plugins/platforms (Linux).
PLUGIN_FILES = {
    "xcb": "libqxcb.so",
    "wayland": "libqwayland-generic.so",
    "wayland-egl": "libqwayland-egl.so",
    "eglfs": "libqeglfs.so",
    "linuxfb": "libqlinuxfb.so",
    "vnc": "libqvnc.so",
}

# Libraries PyQt5's xcb plugin (and Qt underneath) loads from the system, with the Debian/Ubuntu
# package that ships each. Names outside this table follow Debian's library package naming
# (see `debian_package`).
DEBIAN_PACKAGES = {
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-xinerama.so.0": "libxcb-xinerama0",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb.so.1": "libxcb1",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libX11.so.6": "libx11-6",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libdbus-1.so.3": "libdbus-1-3",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libgthread-2.0.so.0": "libglib2.0-0",
    "libGL.so.1": "libgl1",
    "libEGL.so.1": "libegl1",
    "libOpenGL.so.0": "libopengl0",
    "libwayland-client.so.0": "libwayland-client0",
    "libwayland-cursor.so.0": "libwayland-cursor0",
    "libwayland-egl.so.1": "libwayland-egl1",
}

OTHER_SYSTEMS = ("Elsewhere: install the packages that provide these files (Fedora: dnf provides '*/NAME'; "
                 "Arch: pacman -F NAME; openSUSE: zypper se --provides NAME).")

PROBE = ("import sys\n"
         "from PyQt5.QtWidgets import QApplication\n"
         "app = QApplication(['facekit-qt-probe'])\n"
         "sys.stdout.write(app.platformName())\n")


# What the answer depends on; a passing check is remembered per process under these values
# (`capture` asks before the window and again before Qt's first application object).
ENV_KEYS = ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM", "QT_QPA_PLATFORM_PLUGIN_PATH", "LD_LIBRARY_PATH",
            "XAUTHORITY")
_passed: dict = {}


@dataclass(frozen=True)
class QtCheck:
    """The preflight's answer: `ok`, the Qt platform it looked at, and when not ok why (`problem`,
    one paragraph for a person) and which shared libraries are missing (`missing`, file names)."""

    ok: bool
    platform: str
    detail: str = ""  # when ok: what was checked (e.g. the display)
    problem: str = ""
    missing: tuple[str, ...] = field(default_factory=tuple)


def debian_package(soname: str) -> str:
    """The Debian/Ubuntu package that ships library `soname` (e.g. 'libxcb-icccm.so.4' ->
    'libxcb-icccm4'): the table above, else Debian policy's rule (name + soversion, with a dash
    when the name ends in a digit, lower case)."""
    if soname in DEBIAN_PACKAGES:
        return DEBIAN_PACKAGES[soname]
    m = re.fullmatch(r"(lib.+?)\.so\.([0-9][0-9.]*)", soname)
    if not m:
        return soname
    name, version = m.group(1).lower(), m.group(2)
    return f"{name}-{version}" if name[-1].isdigit() else f"{name}{version}"


def install_hint(missing) -> str:
    """How to install the missing libraries: the exact Debian/Ubuntu command, then other systems."""
    packages = list(dict.fromkeys(debian_package(lib) for lib in missing))
    return (f"On Debian/Ubuntu: sudo apt-get install {' '.join(packages)}\n"
            f"{OTHER_SYSTEMS.replace('NAME', missing[0])}")


def qt_platform(environ=None, platform: str | None = None) -> str:
    """The Qt platform plugin Qt 5 will load: `QT_QPA_PLATFORM`'s first entry, else the system's
    default ('xcb' on Linux: Qt 5 uses XWayland on a Wayland desktop unless told otherwise)."""
    env = os.environ if environ is None else environ
    platform = platform or sys.platform
    chosen = (env.get("QT_QPA_PLATFORM") or "").split(";")[0].split(":")[0].strip().lower()
    if chosen:
        return chosen
    if platform.startswith("linux") or "bsd" in platform:
        return "xcb"
    return {"darwin": "cocoa", "win32": "windows"}.get(platform, platform)


def plugin_path(name: str, environ=None) -> Path | None:
    """The plugin file Qt would load for platform `name`: from `QT_QPA_PLATFORM_PLUGIN_PATH` when
    set (Qt looks there first), else PyQt5's bundled plugins; None when there is none."""
    env = os.environ if environ is None else environ
    filename = PLUGIN_FILES.get(name, f"libq{name}.so")
    folders = [Path(p) for p in (env.get("QT_QPA_PLATFORM_PLUGIN_PATH") or "").split(os.pathsep) if p]
    spec = importlib.util.find_spec("PyQt5")
    if spec is not None and spec.origin:
        pyqt = Path(spec.origin).parent
        folders += [pyqt / "Qt5" / "plugins" / "platforms", pyqt / "Qt" / "plugins" / "platforms"]
    for folder in folders:
        if (folder / filename).is_file():
            return folder / filename
    return None


def missing_libraries(plugin: Path, environ=None) -> list[str] | None:
    """Shared libraries `plugin` needs that the dynamic loader cannot find (`ldd`'s `=> not found`
    lines, in order, once each); None when `ldd` is not available to ask."""
    env = dict(os.environ if environ is None else environ)
    try:
        out = subprocess.run(["ldd", str(plugin)], env=env, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    missing = [line.split("=>")[0].strip() for line in out.stdout.splitlines() if "=> not found" in line]
    return list(dict.fromkeys(missing))


def _probe(environ, timeout: float) -> tuple[bool, str]:
    """Start a QApplication in a subprocess; (True, platform name) or (False, what Qt said)."""
    env = dict(environ)
    env.pop("QT_DEBUG_PLUGINS", None)
    try:
        out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"a test Qt program did not start within {timeout:g} s"
    except OSError as e:
        return False, f"cannot run a test Qt program: {e}"
    if out.returncode == 0:
        return True, out.stdout.strip()
    lines = [line.strip() for line in out.stderr.splitlines() if line.strip()]
    # Qt's own first complaint says it best (e.g. "qt.qpa.xcb: could not connect to display :9");
    # the plugin list and "Aborted" lines that follow are noise for a user.
    said = next((line for line in lines if line.startswith("qt.qpa") or "could not" in line.lower()),
                lines[-1] if lines else f"exit status {out.returncode}")
    return False, said


def preflight(environ=None, *, platform: str | None = None, probe: bool = True,
              timeout: float = 30.0) -> QtCheck:
    """Whether Qt can open a window on this display, without risking an abort in this process.

    `environ` defaults to `os.environ` (it is also the environment of `ldd` and the probe);
    `probe=False` skips the test Qt program (then only the display and the libraries are checked).
    """
    env = dict(os.environ if environ is None else environ)
    platform = platform or sys.platform
    key = (platform, probe, *(env.get(k) for k in ENV_KEYS))
    if key in _passed:
        return _passed[key]
    check = _preflight(env, platform=platform, probe=probe, timeout=timeout)
    if check.ok:
        _passed[key] = check
    return check


def _preflight(env: dict, *, platform: str, probe: bool, timeout: float) -> QtCheck:
    name = qt_platform(env, platform)
    if name in NO_DISPLAY_PLATFORMS:
        return QtCheck(True, name, detail=f"QT_QPA_PLATFORM={name}: no display needed")
    if importlib.util.find_spec("PyQt5") is None:
        return QtCheck(False, name, problem="PyQt5 is not installed: pip install labelme==6.3.1 "
                                            "(it brings PyQt5)")
    if not (platform.startswith("linux") or "bsd" in platform):
        # Windows and macOS wheels carry their platform plugin and need no extra system library.
        return QtCheck(True, name, detail="desktop session")
    display = env.get("DISPLAY") or ""
    wayland = env.get("WAYLAND_DISPLAY") or ""
    if name == "xcb" and not display:
        extra = (f" This looks like a Wayland session (WAYLAND_DISPLAY={wayland}) without XWayland: "
                 "start XWayland, or try QT_QPA_PLATFORM=wayland." if wayland else
                 " Run on a desktop session (or over `ssh -X`), or start a virtual one: "
                 "Xvfb :99 & export DISPLAY=:99")
        return QtCheck(False, name, problem=f"no X display: DISPLAY is not set.{extra}")
    if name.startswith("wayland") and not wayland:
        return QtCheck(False, name, problem=f"QT_QPA_PLATFORM={name} but WAYLAND_DISPLAY is not set")
    where = f"DISPLAY={display}" if name == "xcb" else f"WAYLAND_DISPLAY={wayland}" if wayland else name
    plugin = plugin_path(name, env)
    if plugin is None:
        return QtCheck(False, name, problem=f"Qt's '{name}' platform plugin is missing from the PyQt5 "
                                            f"install: pip install --force-reinstall PyQt5")
    missing = missing_libraries(plugin, env) or []
    if missing:
        return QtCheck(False, name, missing=tuple(missing), problem=(
            f"Qt cannot open a window ({where}): its '{name}' platform plugin needs system libraries "
            f"that are not installed: {', '.join(missing)}.\n{install_hint(missing)}"))
    if probe:
        ok, said = _probe(env, timeout)
        if not ok:
            return QtCheck(False, name, problem=f"Qt cannot open a window on {where}: {said}")
    return QtCheck(True, name, detail=where)


def require_qt(environ=None, *, what: str = "the window") -> None:
    """Raise one clear `DatatoolError` when Qt cannot open `what` here (see `preflight`)."""
    from .errors import DatatoolError

    check = preflight(environ)
    if not check.ok:
        raise DatatoolError(f"cannot show {what}: {check.problem}")
