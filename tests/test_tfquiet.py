"""The CLIs import TensorFlow quietly, but never hide why an import failed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

FAKE_TF = """
import os
os.write(2, b"I0000 noisy C++ start-up line\\n")
if os.environ.get("FAKE_TF_FAIL"):
    raise ImportError("libcudart.so: cannot open shared object file")

class config:
    @staticmethod
    def list_physical_devices(kind):
        os.write(2, b"E0000 failed call to cuInit\\n")
        return []
"""


@pytest.mark.parametrize("fail", [False, True])
def test_first_tensorflow_import_is_quiet_unless_it_fails(tmp_path, fail):
    pkg = tmp_path / "tensorflow"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(FAKE_TF)
    code = textwrap.dedent("""
        import sys
        from datatool.core import tfquiet
        tfquiet.install()
        try:
            import tensorflow
            print("imported")
        except ImportError as e:
            print("failed:", e)
    """)
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin", **({"FAKE_TF_FAIL": "1"} if fail else {})}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    if fail:
        assert "failed: libcudart.so" in out.stdout
        assert "noisy C++ start-up line" in out.stderr  # replayed: the user sees why
    else:
        assert out.stdout.strip() == "imported"
        assert out.stderr == ""  # start-up lines and the CUDA probe swallowed
