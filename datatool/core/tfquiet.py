"""Import TensorFlow without its start-up log lines in CLI processes.

TensorFlow 2.21 prints several absl log lines on import (oneDNN, "Could not find cuda drivers",
CPU instruction sets) and one more at its first op on a machine without CUDA; the
`TF_CPP_MIN_LOG_LEVEL` variable no longer silences them. They are C++ writes to file
descriptor 2, so they can only be caught by pointing fd 2 elsewhere while they happen.

`install()` adds a one-shot import hook: whichever module first imports `tensorflow`, the
import (and device discovery, which triggers the CUDA probe) runs with fd 2 captured. If the
import fails, the captured text is replayed so nothing useful is lost. Library users who
import facekit themselves are unaffected; only the CLIs call `install()`.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import sys
import tempfile


@contextlib.contextmanager
def captured_stderr_fd():
    """Point file descriptor 2 at a temporary file; replay it to stderr if the block raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as buf:
        os.dup2(buf.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            buf.seek(0)
            sys.stderr.write(buf.read().decode("utf-8", "replace"))
            sys.stderr.flush()
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        with captured_stderr_fd():
            self._loader.exec_module(module)
            try:  # device discovery now, so the CUDA probe's message is caught too
                module.config.list_physical_devices("GPU")
            except Exception:
                pass


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)  # one shot: find the real spec without us
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def install() -> None:
    """Make the first `import tensorflow` in this process quiet (no-op if already imported)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietTensorFlowFinder())
