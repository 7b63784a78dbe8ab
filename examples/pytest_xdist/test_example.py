"""Tests that share one expensive database across xdist workers (see conftest.py)."""

from __future__ import annotations

import os
import sqlite3
from typing import Any

import pytest

ROWS = 10_000  # as built by conftest.build_database


def worker_name() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "master")


@pytest.mark.parametrize("n", [0, 1, 7, 99, 1234, ROWS - 1])
def test_square(database: str, n: int) -> None:
    with sqlite3.connect(database) as db:
        (square,) = db.execute("SELECT square FROM squares WHERE n = ?", (n,)).fetchone()
    db.close()
    assert square == n * n


def test_row_count(database: str) -> None:
    with sqlite3.connect(database) as db:
        (count,) = db.execute("SELECT COUNT(*) FROM squares").fetchone()
    db.close()
    assert count == ROWS


@pytest.mark.parametrize("i", range(4))
def test_built_once(database: str, shared_dict: Any, i: int) -> None:
    # Whichever worker runs this, the database was built exactly once before it got here.
    assert shared_dict["builds"] == 1
    assert worker_name() in shared_dict["users"]


@pytest.mark.parametrize("i", range(4))
def test_shared_counter(shared_dict: Any, shared_lock: Any, i: int) -> None:
    # Without the lock, two workers could read the same count and lose an increment.
    with shared_lock:
        shared_dict["counter"] = shared_dict.get("counter", 0) + 1
    assert 1 <= shared_dict["counter"] <= 4
