"""The pytest plugin, driven through pytester in real subprocess pytest runs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import segments_created_by

pytest.importorskip("xdist")

TESTS = textwrap.dedent("""
    import os
    import pytest

    COUNT = os.environ["COUNT_DIR"]

    def _note(what):
        with open(os.path.join(COUNT, what), "a") as f:
            f.write(f"{os.getpid()}\\n")

    def make():
        _note("setup")
        return {"token": os.urandom(8).hex()}

    def teardown(value):
        _note("teardown")
        with open(os.path.join(COUNT, "teardown-value"), "w") as f:
            f.write(value["token"])

    @pytest.mark.parametrize("i", range(12))
    def test_once(shmshare_once, shared_dict, shared_lock, i):
        _note("pids")
        value = shmshare_once("server", make, teardown)
        with shared_lock:
            shared_dict.setdefault("token", value["token"])
            shared_dict["hits"] = shared_dict.get("hits", 0) + 1
        assert shared_dict["token"] == value["token"]
        with open(os.path.join(COUNT, f"value-{i}"), "w") as f:
            f.write(value["token"])
""")


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _run(pytester: pytest.Pytester, tmp_path: Path, *args: str,
         env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], Path]:
    counts = tmp_path / f"counts-{len(list(tmp_path.iterdir()))}"
    counts.mkdir()
    pytester.makepyfile(test_plugin_usage=TESTS)
    full_env = {**os.environ, "COUNT_DIR": str(counts), "SHMSHARE_DIR": str(tmp_path / "shm"),
                **(env or {})}
    full_env.pop("PYTEST_XDIST_WORKER", None)
    full_env.pop("PYTEST_ADDOPTS", None)
    with subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *args], cwd=pytester.path, env=full_env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as p:
        out, err = p.communicate(timeout=300)
    with (counts / "pids").open("a") as f:
        f.write(f"{p.pid}\n")  # the controller
    return subprocess.CompletedProcess(p.args, p.returncode, out, err), counts


def _left_by(counts: Path) -> list[int]:
    """Segments still existing that a process of the pytest run created."""
    return segments_created_by(*{int(x) for x in _lines(counts / "pids")})


def _check_once(proc: subprocess.CompletedProcess[str], counts: Path, tmp_path: Path) -> None:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(_lines(counts / "setup")) == 1, proc.stdout
    assert len(_lines(counts / "teardown")) == 1, proc.stdout
    values = {(counts / f"value-{i}").read_text() for i in range(12)}
    assert values == {(counts / "teardown-value").read_text()}
    runs = tmp_path / "shm" / "pytest-runs"
    assert not runs.exists() or list(runs.iterdir()) == []  # the controller cleaned up
    assert _left_by(counts) == []


@pytest.mark.parametrize("args", [(), ("-n", "0"), ("-p", "no:xdist"), ("-n", "2"),
                                  ("-n", "4")], ids=["plain", "n0", "no-xdist", "n2", "n4"])
def test_once_per_run(pytester: pytest.Pytester, tmp_path: Path, args: tuple[str, ...]) -> None:
    """The factory and the teardown run exactly once, whatever the worker count."""
    proc, counts = _run(pytester, tmp_path, *args)
    _check_once(proc, counts, tmp_path)


def test_autoload_disabled_with_p_shmshare(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 with -p shmshare (and -p xdist) behaves the same."""
    proc, counts = _run(pytester, tmp_path, "-p", "shmshare", "-p", "xdist", "-n", "2",
                        env={"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})
    _check_once(proc, counts, tmp_path)


def test_worker_dying_mid_run(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """A worker that os._exit()s mid-run: still one setup, one teardown, nothing left."""
    pytester.makepyfile(test_dies=textwrap.dedent("""
        import os
        def test_die(shmshare_once):
            shmshare_once("server", __import__("test_plugin_usage").make,
                          __import__("test_plugin_usage").teardown)
            os._exit(3)
    """))
    proc, counts = _run(pytester, tmp_path, "-n", "2")
    assert proc.returncode != 0  # the crashed test is reported
    assert "test_die" in proc.stdout and "12 passed" in proc.stdout, proc.stdout
    assert len(_lines(counts / "setup")) == 1
    assert len(_lines(counts / "teardown")) == 1
    assert _left_by(counts) == []


def test_factory_dying_is_taken_over(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """A worker that dies inside the factory: another worker runs it; teardown once."""
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
    proc, counts = _run(pytester, tmp_path, "-n", "2", "test_takeover.py")
    assert "5 passed" in proc.stdout, proc.stdout + proc.stderr
    assert _lines(counts / "td") == ["42"]


def test_concurrent_runs_do_not_share(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """Two pytest runs at once in the same directory get separate state."""
    pytester.makepyfile(test_iso=textwrap.dedent("""
        import os, time
        import pytest

        @pytest.mark.parametrize("i", range(8))
        def test_mine(shared_dict, i):
            mark = os.environ["RUN_MARK"]
            assert shared_dict.setdefault("mark", mark) == mark
            time.sleep(0.05)   # widen the window in which the runs overlap
    """))
    env = {**os.environ, "SHMSHARE_DIR": str(tmp_path / "shm"), "COUNT_DIR": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               "-n", "2", "test_iso.py"], cwd=pytester.path,
                              env={**env, "RUN_MARK": mark}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for mark in ("A", "B")]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out


def test_crashed_run_is_swept_by_next(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """A run whose controller was SIGKILLed leaves a directory the next run removes."""
    shm = tmp_path / "shm"
    stale = shm / "pytest-runs" / "run-dead"
    code = textwrap.dedent(f"""
        import os, signal
        from shmshare import SharedDict
        from shmshare.naming.dirs import claim
        from shmshare._core import proc
        from pathlib import Path
        d = claim(Path({str(stale)!r}), os.getpid(), proc.token())
        SharedDict("shared_dict", project_dir=d, persist=True)["x"] = 1
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    crashed = subprocess.run([sys.executable, "-c", code], timeout=60, check=False)
    assert crashed.returncode < 0 and (stale / "shared_dict.key").exists()
    proc, counts = _run(pytester, tmp_path)
    _check_once(proc, counts, tmp_path)
    assert not stale.exists()
    assert not list((tmp_path / "shm").glob("**/*.key"))
