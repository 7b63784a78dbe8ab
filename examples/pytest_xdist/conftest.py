"""A session setup that runs ONCE for all pytest-xdist workers, and state they share.

Without shmshare, every xdist worker runs each ``scope="session"`` fixture itself:
with ``-n 8`` an expensive setup runs 8 times.  The shmshare pytest plugin (loaded
by itself once shmshare is installed) provides:

* ``shmshare_once(key, factory, teardown)`` — ``factory()`` runs once per test run,
  in whichever worker asks first; the others wait and get its (pickled) value.
  ``teardown(value)`` runs once, in the controller, after all workers are done;
* ``shared_dict`` / ``shared_lock`` — a SharedDict and a robust lock common to all
  workers of this run (and only this run).

Here the "expensive" setup builds a SQLite database in a temporary directory; the
teardown deletes it.  The workers count in ``shared_dict`` how often it was built and
who used it, and the controller prints that at the end of the run.

Run:  python -m pytest examples/pytest_xdist -n 2 -p no:cacheprovider
(with PYTEST_DISABLE_PLUGIN_AUTOLOAD=1, add  -p shmshare -p xdist)
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shmshare.pytest_plugin import run_shared_dict

ROWS = 10_000


def worker_name() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "master")  # "gw0", "gw1"... under xdist


def build_database() -> str:
    """The expensive part (imagine minutes): a database of ROWS squares; its path."""
    directory = tempfile.mkdtemp(prefix="example-db-")
    path = os.path.join(directory, "squares.sqlite")
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE squares (n INTEGER PRIMARY KEY, square INTEGER)")
        db.executemany("INSERT INTO squares VALUES (?, ?)", ((n, n * n) for n in range(ROWS)))
    db.close()
    time.sleep(1.0)  # stands for the rest of a slow setup
    return path


def remove_database(path: str) -> None:
    """The teardown: runs once, in the controller, when every worker has finished."""
    shutil.rmtree(Path(path).parent)


@pytest.fixture(scope="session")
def database(shmshare_once: Callable[..., Any], shared_dict: Any, shared_lock: Any) -> str:
    def build_and_count() -> str:
        with shared_lock:  # a read-modify-write of shared state: hold the shared lock
            shared_dict["builds"] = shared_dict.get("builds", 0) + 1
        return build_database()

    path: str = shmshare_once("database", build_and_count, teardown=remove_database)
    with shared_lock:
        users = shared_dict.get("users", [])
        shared_dict["users"] = sorted({*users, worker_name()})
    return path


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """In the controller: report what the workers recorded in ``shared_dict``."""
    d = run_shared_dict(config)
    if d is None:  # no test used the shared dict
        return
    with d:  # detaches at the end of the block
        builds, users = d.get("builds", 0), d.get("users", [])
    terminalreporter.write_line(
        f"expensive setup ran {builds} time(s) for {len(users)} worker(s): {', '.join(users)}")
