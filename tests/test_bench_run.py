"""benchmarks/run.py runs end to end (--quick) with whatever peers are installed.

Nothing here looks at a timing: only that the run finishes, writes its pages,
measured every target of the performance issue in at least 3 rounds, and left
nothing behind.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_run_quick_writes_pages_with_spreads(tmp_path: Path) -> None:
    """Every target row is measured (or says why not), with medians and min-max spreads."""
    out = tmp_path / "out"
    env = {**os.environ, "SHMSHARE_DIR": str(tmp_path / "proj")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--out", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    output = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, output
    page = (out / "benchmarks.md").read_text()
    assert "3 interleaved rounds" in page
    assert "load average at start" in page and "load average at end" in page
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import report
    finally:
        sys.path.pop(0)
    absent = {peer for peer, module in (("UltraDict", "UltraDict"),)
              if importlib.util.find_spec(module) is None}
    for target in report.TARGETS:
        row = next(line for line in page.splitlines() if line.startswith(f"| {target.path} |"))
        if target.ref and target.ref.split(" |")[0] in absent:
            assert "not measured" in row, row  # its peer is not installed here ([bench] is)
            continue
        assert "met" in row or "missed" in row, row
        assert "\u2013" in row, row  # a min-max spread (an en dash)
    compare = (out / "benchmarks-compare.md").read_text()
    for lib in ("local dict of pickles (floor)", "shmshare.SharedDict",
                "multiprocessing.Manager().dict()"):
        assert f"| {lib} |" in compare, lib


def test_peer_ratios_below_one_read_as_slower() -> None:
    """A comparison cell never says "0.02\u00d7 faster": below 1 it is inverted, and slower."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import report
    finally:
        sys.path.pop(0)
    x, dash = "\u00d7", "\u2013"
    assert report._faster([2.0, 1.5, 3.0]) == f"2.00{x} faster (1.50{dash}3.00)"
    assert report._faster([0.5, 0.25, 0.4]) == f"2.50{x} slower (2.00{dash}4.00)"
    assert report._faster([0.9, 1.2, 0.8]) == f"1.11{x} slower (0.83{dash}1.25)"
