"""The public types as mypy sees them: typing_tests/ must type-check (strict)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_typing_tests_pass_mypy() -> None:
    """SharedDict[str, int] gives int items, the Manager's factories are typed, and misuse
    (a wrong value type, a misspelt keyword) is a type error (each `type: ignore` must be used)."""
    pytest.importorskip("mypy", reason="mypy is part of the dev tools, not of [test]")
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--warn-unused-ignores",
         "--config-file", str(ROOT / "pyproject.toml"), str(ROOT / "typing_tests")],
        capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
