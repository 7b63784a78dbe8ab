"""The pytest plugin across hosts: ``--shmshare-url`` (or ``$SHMSHARE_URL``) puts
``shmshare_once``, ``shared_dict`` and ``shared_lock`` on a real redis-server, which
xdist workers on any host share; real subprocess pytest runs with ``-n 2``."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
from redis_server import RedisServer, redis_server  # noqa: F401  (fixture)
from test_pytest_plugin import _left_by, _lines, _run

pytest.importorskip("xdist")
pytest.importorskip("redis", reason="redis-py is not installed (pip install shmshare[redis])")


def _check(proc: subprocess.CompletedProcess[str], counts: Path, tmp_path: Path,
           server: RedisServer) -> None:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(_lines(counts / "setup")) == 1, proc.stdout
    assert len(_lines(counts / "teardown")) == 1, proc.stdout
    values = {(counts / f"value-{i}").read_text() for i in range(12)}
    assert values == {(counts / "teardown-value").read_text()}
    assert len(set(_lines(counts / "pids"))) >= 3  # the controller and two workers
    # Nothing of this machine's shared memory was used, and nothing is left on the server.
    assert not (tmp_path / "shm" / "pytest-runs").exists()
    assert _left_by(counts) == []
    from shmshare.stores.redis import RedisStore

    left = RedisStore(server.unix_url).client.keys("shmshare:{pytest-*")
    assert left == [], left


def test_once_per_run_on_redis(pytester: pytest.Pytester, tmp_path: Path,
                               redis_server: RedisServer) -> None:  # noqa: F811
    """--shmshare-url with -n 2: one setup and one teardown across the workers, which see
    one dict and one lock on the server."""
    proc, counts = _run(pytester, tmp_path, "-n", "2", "--shmshare-url", redis_server.tcp_url)
    _check(proc, counts, tmp_path, redis_server)


def test_url_from_environment(pytester: pytest.Pytester, tmp_path: Path,
                              redis_server: RedisServer) -> None:  # noqa: F811
    """$SHMSHARE_URL instead of the option: the same."""
    proc, counts = _run(pytester, tmp_path, "-n", "2",
                        env={"SHMSHARE_URL": redis_server.unix_url})
    _check(proc, counts, tmp_path, redis_server)


def test_workers_need_no_url_of_their_own(pytester: pytest.Pytester, tmp_path: Path,
                                          redis_server: RedisServer) -> None:  # noqa: F811
    """Workers started with another SHMSHARE_DIR and no SHMSHARE_URL (as on another host)
    get the url from the controller and share its objects."""
    spec = f"popen//env:SHMSHARE_DIR={tmp_path / 'elsewhere'}"
    proc, counts = _run(pytester, tmp_path, "--tx", f"2*{spec}", "--dist", "load",
                        "--shmshare-url", redis_server.tcp_url)
    _check(proc, counts, tmp_path, redis_server)
    assert not (tmp_path / "elsewhere").exists()


def test_factory_dying_is_taken_over_on_redis(pytester: pytest.Pytester, tmp_path: Path,
                                              redis_server: RedisServer) -> None:  # noqa: F811
    """A worker that dies inside the factory: one lease later another worker runs it."""
    pytester.makepyfile(test_takeover=textwrap.dedent("""
        import os, pathlib
        import pytest

        def factory():
            flag = pathlib.Path(os.environ["COUNT_DIR"]) / "died-once"
            if not flag.exists():
                flag.write_text("x")
                os._exit(5)                      # die in the middle of the factory
            return 42

        def teardown(v):
            with open(os.path.join(os.environ["COUNT_DIR"], "td"), "a") as f:
                f.write(f"{v}\\n")

        @pytest.mark.parametrize("i", range(6))
        def test_take(shmshare_once, i):
            assert shmshare_once("k", factory, teardown) == 42
    """))
    proc, counts = _run(pytester, tmp_path, "-n", "2", "--shmshare-url", redis_server.tcp_url,
                        "test_takeover.py")
    assert "5 passed" in proc.stdout, proc.stdout + proc.stderr
    assert _lines(counts / "td") == ["42"]


def test_unreachable_url_is_a_clear_usage_error(pytester: pytest.Pytester,
                                                tmp_path: Path) -> None:
    """A url nobody answers at: the run stops at once, naming the url."""
    proc, _ = _run(pytester, tmp_path, "--shmshare-url", f"unix://{tmp_path}/none.sock")
    assert proc.returncode != 0
    assert "none.sock" in proc.stderr and "UsageError" not in proc.stdout + proc.stderr
    assert "INTERNALERROR" not in proc.stdout + proc.stderr
