"""The documentation site builds with ``mkdocs build --strict``.

Strict mode turns every warning into an error: a broken link or anchor, a
page missing from the nav, or a ``::: shmshare.X`` reference that
mkdocstrings cannot resolve fails this test.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

_TOOLS = {"mkdocs": "mkdocs", "material": "mkdocs-material", "mkdocstrings": "mkdocstrings",
          "mkdocstrings_handlers": "mkdocstrings-python"}
_MISSING = [dist for module, dist in _TOOLS.items() if importlib.util.find_spec(module) is None]


@pytest.mark.skipif(bool(_MISSING), reason="the docs toolchain is not installed (missing: "
                    + ", ".join(_MISSING) + "); pip install -e '.[docs]'")
@pytest.mark.skipif(not (ROOT / "mkdocs.yml").is_file(), reason="no mkdocs.yml (not a checkout)")
def test_site_builds_strict(tmp_path: Path) -> None:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    for line in proc.stderr.splitlines():
        assert not line.startswith("WARNING"), f"mkdocs warned: {line}"
    assert (tmp_path / "index.html").is_file()
    assert (tmp_path / "reference" / "objects" / "index.html").is_file()
