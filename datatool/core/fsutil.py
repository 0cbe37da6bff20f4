"""File-system helpers: atomic writes, refusing to overwrite, provenance records."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import platform
import shutil
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from .errors import DatatoolError, OutputExistsError

RECORD_NAME = "dataset.json"


@contextlib.contextmanager
def atomic_path(path: Path, *, overwrite: bool = True):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    An interrupted write (exception, Ctrl-C) leaves no partial file under the final name.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise OutputExistsError(f"{path}: already exists (use --overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".facekit-tmp-{path.name}.", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


_TMP_COUNTER = itertools.count()


def write_bytes_atomic(path: Path, data: bytes, *, overwrite: bool = True) -> None:
    """`atomic_path` semantics with one open and no temp-name search (augment writes thousands of
    files), and the file gets the usual umask mode rather than mkstemp's 0600."""
    path = Path(path)
    if not overwrite and path.exists():
        raise OutputExistsError(f"{path}: already exists (use --overwrite to replace it)")
    tmp = path.parent / f".facekit-tmp-{path.name}.{os.getpid()}-{next(_TMP_COUNTER)}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = -1
    try:  # everything from creating the temp file on is inside: Ctrl-C anywhere removes it
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileNotFoundError:  # first file in a new folder
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, flags, 0o666)
        view = memoryview(data).cast("B")  # any bytes-like, e.g. a numpy buffer, as flat bytes
        while view:
            view = view[os.write(fd, view):]
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            with contextlib.suppress(OSError):  # may already be closed if Ctrl-C came just after
                os.close(fd)
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str, *, overwrite: bool = True) -> None:
    write_bytes_atomic(path, text.encode("utf-8"), overwrite=overwrite)


def write_json_atomic(path: Path, obj, *, overwrite: bool = True, indent: int = 2) -> None:
    write_text_atomic(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n", overwrite=overwrite)


def refuse_existing(*paths, overwrite: bool) -> None:
    """Raise `OutputExistsError` for the first of `paths` (None ones skipped) that exists, unless
    `overwrite`: called before the work, so a refused command has written nothing."""
    if overwrite:
        return
    for path in paths:
        if path is not None and Path(path).exists():
            raise OutputExistsError(f"{path}: already exists (use --overwrite to replace it)")


def prepare_output_dir(out: Path, *, overwrite: bool = False, resume: bool = False) -> Path:
    """Create `out`, refusing a non-empty one unless `overwrite` or `resume` is given.

    `overwrite` does not delete anything: files are replaced one by one as they are written.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out}: exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not (overwrite or resume):
        raise OutputExistsError(f"{out}: folder is not empty (use --overwrite to write into it anyway)")
    out.mkdir(parents=True, exist_ok=True)
    return out


def refuse_overlap(out: Path, source: Path) -> None:
    """`DatatoolError` if the output folder `out` is `source`, lies inside it or contains it: a
    stage that derives a new folder never writes into (or over) what it reads, even with
    --overwrite. `source` may be a folder or a file (a COCO JSON, a WIDER gt file)."""
    o, s = Path(out).resolve(), Path(source).resolve()
    if o == s or s in o.parents:
        raise DatatoolError(f"{out}: the output folder must not be inside the source {source} or be the source "
                            "itself, even with --overwrite; choose another --out")
    if o in s.parents:
        raise DatatoolError(f"{out}: the output folder must not contain the source {source}; choose another --out")


@contextlib.contextmanager
def staged_output_dir(out: Path, *, overwrite: bool = False):
    """All or nothing for a derived folder: yield a new temporary folder beside `out` to write
    into; when the block succeeds, it becomes `out` (one rename when `out` is absent or empty) or,
    with `overwrite`, its files replace those in `out` one by one; if the block fails, it is
    removed and `out` is as it was. Refuses a non-empty `out` without `overwrite` (as
    `prepare_output_dir`), before anything is written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(f"{out}: folder is not empty (use --overwrite to write into it anyway)")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".facekit-tmp-{out.name}.{os.getpid()}-{next(_TMP_COUNTER)}"
    stage.mkdir()  # the usual umask mode, unlike mkdtemp's 0700, since it becomes `out`
    try:
        yield stage
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        if not out.exists():
            os.replace(stage, out)
            return
        for f in sorted(stage.rglob("*")):
            if f.is_file():
                dest = out / f.relative_to(stage)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(f, dest)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def versions() -> dict:
    """Versions of Python and of the libraries that shape outputs (only those already imported)."""
    from .. import __version__

    v = {"facekit": __version__, "python": platform.python_version()}
    for mod in ("numpy", "cv2", "albumentations", "tensorflow", "keras", "PIL", "labelme"):
        m = sys.modules.get(mod)
        if m is not None:
            v[mod] = getattr(m, "__version__", "?")
    return v


def write_record(out: Path, *, command: str, name: str = RECORD_NAME, **info) -> Path:
    """Write the provenance record of an output folder: what made it and from what."""
    record = {
        "command": command,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        **info,
    }
    path = Path(out) / name
    write_json_atomic(path, record)
    return path


def read_record(root: Path, name: str = RECORD_NAME) -> dict | None:
    path = Path(root) / name
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def command_line() -> str:
    """The command as the user typed it (program name without its path)."""
    import shlex

    argv = [Path(sys.argv[0]).name] + sys.argv[1:]
    return " ".join(shlex.quote(a) for a in argv)
