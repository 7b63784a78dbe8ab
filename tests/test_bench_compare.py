"""benchmarks/compare.py runs end to end (--quick) with whatever peers are installed.

Nothing here looks at a timing: only that the run finishes, writes its report
and plot, measured shmshare and Manager, and that its correctness checks
(exact counters, consistent reads, nothing left behind) passed.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                       reason="matplotlib is not installed (pip install -e '.[bench]')"),
]


def test_compare_quick_writes_report_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "SHMSHARE_DIR": str(tmp_path / "proj")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "compare.py"), "--quick", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    output = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, output
    assert "all checks passed" in proc.stdout, output

    md = (out / "benchmarks-compare.md").read_text()
    png = out / "img" / "compare.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](img/compare.png)" in md

    rows = [line for line in md.splitlines() if line.startswith("| ")]
    for lib in ("shmshare.SharedDict", "multiprocessing.Manager().dict()"):
        assert any(row.startswith(f"| {lib} | set |") for row in rows), lib
        assert any(row.startswith(f"| {lib} | 2 |") for row in rows), lib
    assert "libraries with a cross-process lock: passed" in md
    assert "shared memory left behind by this run: none" in md
    # Every peer is either measured or said to be missing, never silently absent.
    for lib in ("UltraDict", "shared-memory-dict", "redis-py + redis-server"):
        assert any(row.startswith(f"| {lib} |") for row in rows), lib
