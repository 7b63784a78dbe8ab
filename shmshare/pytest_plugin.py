"""pytest plugin: state and once-per-run fixtures shared by all pytest-xdist workers.

Registered through the ``pytest11`` entry point ``shmshare``, so it loads by
itself; with ``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1`` pass ``-p shmshare``.

Fixtures (the same with or without xdist, ``-n 0`` or ``-p no:xdist``):

* ``shmshare_once(key, factory, teardown=None)`` — ``factory()`` runs once
  per test run across all workers; the others wait and get the same value
  (pickled, cloudpickle as fallback).  ``teardown(value)`` runs once, in the
  controller, after every worker is finished — also when a worker died.
* ``shared_dict`` — a :class:`~shmshare.SharedDict` shared by every worker of
  this run.
* ``shared_lock`` — a robust lock shared by every worker of this run.

A run's objects live in their own project directory, named after the run id
that the controller hands to its workers (``workerinput``), so concurrent
pytest runs never share state.  The controller removes them when the run
ends; a run that crashed is swept by the next one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ._pytest_remote import RemoteRun
    from .objects.dict import SharedDict

# Nothing of shmshare is imported until a fixture or a hook needs it: pytest
# loads this plugin in every project where shmshare is installed, most of
# which never use it.

__all__ = ["OnceError", "run_shared_dict"]

_RUN_KEY = "shmshare_run"
_REMOTE_KEY = "shmshare_remote"  # (url, run id) in workerinput when the run has a url
_POLL_MAX = 0.05


class OnceError(RuntimeError):
    """A ``shmshare_once`` factory failed in another worker; its error is attached."""


# -- run identity and directory ---------------------------------------------------------------


def _runs_base() -> Path:
    from .naming.project_dir import default_project_dir

    return default_project_dir() / "pytest-runs"


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


class _XdistHooks:
    """Registered only when xdist is loaded: hands the run's identity to each worker."""

    def __init__(self, run: _Run) -> None:
        self.run = run

    def pytest_configure_node(self, node: Any) -> None:
        from ._core import proc  # the controller's own token, once xdist starts workers

        if self.run.controller_token is None:
            self.run.controller_token = proc.token()
        node.workerinput[_RUN_KEY] = (str(self.run.path), self.run.controller_pid,
                                      self.run.controller_token)
        if self.run.remote is not None:
            node.workerinput[_REMOTE_KEY] = (self.run.remote.url, self.run.remote.run_id)


class _Run:
    """Where this test run keeps its objects, and which process controls it."""

    def __init__(self, path: Path | str, controller_pid: int,
                 controller_token: int | None) -> None:
        # A str is a run id, turned into the path on first use; a token of None
        # is this process's own, read when the directory is claimed.
        self._path = path
        self.controller_pid = controller_pid
        self.controller_token = controller_token
        self._ready = False
        self.remote: RemoteRun | None = None  # the run's objects on a store url, if any

    @property
    def path(self) -> Path:
        if isinstance(self._path, str):
            self._path = _runs_base() / f"run-{self._path}"
        return self._path

    def directory(self) -> Path:
        """The run's project directory, created on first use by any worker."""
        if not self._ready:
            from ._core import proc
            from .naming.dirs import claim

            token = self.controller_token
            claim(self.path, self.controller_pid, proc.token() if token is None else token)
            self._ready = True
        return self.path


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("shmshare").addoption(
        "--shmshare-url", default=None, metavar="URL",
        help="keep shmshare_once, shared_dict and shared_lock on this Redis store "
             "(redis://, rediss://, unix://, redis+cluster://), so that xdist workers on "
             "other hosts share them (default: $SHMSHARE_URL, else this machine's "
             "shared memory)")


def _remote(url: str, run_id: str) -> RemoteRun:
    try:
        from ._pytest_remote import RemoteRun
    except ImportError as e:  # redis-py is an extra
        raise pytest.UsageError(f"--shmshare-url / $SHMSHARE_URL needs redis-py ({e}); "
                                "pip install 'shmshare[redis]'") from e
    return RemoteRun(url, run_id)


def pytest_configure(config: pytest.Config) -> None:
    if _is_worker(config):
        winput: dict[str, Any] = config.workerinput  # type: ignore[attr-defined]
        if _RUN_KEY in winput:
            path, pid, token = winput[_RUN_KEY]
            run = _Run(Path(path), int(pid), int(token))
        else:  # a controller without this plugin's hook: derive it from xdist's run uid
            # (no owner token: the directory is then never swept as abandoned)
            run = _Run(str(winput["testrunuid"]), os.getppid(), 0)
        if _REMOTE_KEY in winput:
            run.remote = _remote(*winput[_REMOTE_KEY])
        config.stash[_run_key] = run
        return
    run_id = os.urandom(16).hex()
    run = _Run(run_id, os.getpid(), None)
    # $SHMSHARE_URL is shmshare.stores.URL_ENV, spelled out: importing the
    # package here would cost every pytest run that uses none of it.
    url = config.getoption("shmshare_url", None) or os.environ.get("SHMSHARE_URL")
    if url:
        run.remote = _remote(url, run_id)
        from .errors import ShmshareError

        try:
            run.remote.hold_objects()  # fails here, clearly, if the store is unreachable
        except ShmshareError as e:
            raise pytest.UsageError(f"shmshare: the run's store {url.split('@')[-1]!r}: "
                                    f"{e}") from e
    config.stash[_run_key] = run
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(run), "shmshare-xdist-hooks")


def pytest_unconfigure(config: pytest.Config) -> None:
    run = config.stash.get(_run_key, None)
    if run is None or _is_worker(config):
        return
    if run.remote is not None:
        _report_teardowns(config, run.remote.end())
    try:
        if run.path.is_dir():
            # The controller: every worker is down by now.  Run the teardowns,
            # then remove everything the run created.
            from .naming.dirs import remove_all

            try:
                _run_teardowns(run.path, config)
            finally:
                remove_all(run.path)
    finally:
        _sweep_crashed_runs()


def _sweep_crashed_runs() -> None:
    """Remove what runs that crashed left; nothing to import when there is nothing."""
    base = _runs_base()
    try:
        if not os.listdir(base):
            return
    except OSError:
        return
    from .naming.dirs import sweep_dead_owners

    try:
        sweep_dead_owners(base)
    except Exception:  # never let housekeeping break someone's test run
        pass


_run_key = pytest.StashKey[_Run]()


def run_shared_dict(config: pytest.Config) -> SharedDict[str, Any] | None:
    """This run's ``shared_dict``, opened from any process of the run; None if never used.

    For the controller's own hooks, e.g. ``pytest_terminal_summary`` in a
    conftest, to report what the workers put there.  Detach it when done.
    """
    run = config.stash.get(_run_key, None)
    if run is not None and run.remote is not None:
        return run.remote.open("shared_dict")
    if run is None or not (run.path / "shared_dict.key").exists():
        return None
    from .objects.dict import SharedDict

    try:
        return SharedDict("shared_dict", project_dir=run.path, create=False)
    except FileNotFoundError:
        return None


# -- once per run ---------------------------------------------------------------------------


def _registry(run_dir: Path) -> SharedDict[str, Any]:
    from .objects.dict import SharedDict

    return SharedDict("once-registry", project_dir=run_dir, persist=True)


def _wait_or_claim(reg: SharedDict[str, Any], key: str) -> dict[str, Any] | None:
    """The finished record for ``key``, or None once this process has claimed the factory."""
    from ._core import proc

    delay = 0.001
    while True:
        with reg.lock:
            rec = reg.get(key)
            me = proc.token()
            running_elsewhere = (rec is not None and rec["state"] == "running"
                                 and rec.get("token") != me and proc.alive(rec.get("token", 0)))
            if rec is None or (rec["state"] == "running" and not running_elsewhere):
                # Nobody has it, or its worker died mid-factory: take it over.
                reg[key] = {"state": "running", "pid": os.getpid(), "token": me}
                return None
            if rec["state"] != "running":
                return rec  # type: ignore[no-any-return]
        time.sleep(delay)  # another worker is computing it
        delay = min(delay * 2, _POLL_MAX)


def _once(run_dir: Path, key: str, factory: Callable[[], Any],
          teardown: Callable[[Any], Any] | None) -> Any:
    if not isinstance(key, str):
        raise TypeError(f"shmshare_once key must be a str, not {type(key).__name__}")
    with _registry(run_dir) as reg:
        rec = _wait_or_claim(reg, key)
        if rec is None:
            return _run_factory(reg, key, factory, teardown)
        if rec["state"] == "error":
            raise OnceError(f"shmshare_once({key!r}) failed in another worker: "
                            f"{rec['error']!r}") from rec["error"]
        return rec["value"]


def _run_factory(reg: Any, key: str, factory: Callable[[], Any],
                 teardown: Callable[[Any], Any] | None) -> Any:
    """Run the claimed ``key``'s factory and record its value, or its error, in the
    registry ``reg`` (shared memory here, a store for _pytest_remote)."""
    try:
        value = factory()
    except BaseException as exc:
        reg[key] = {"state": "error", "error": _portable(exc)}
        raise
    try:
        reg[key] = {"state": "done", "value": value, "teardown": teardown}
    except Exception as exc:
        reg[key] = {"state": "error", "error": _portable(exc)}
        raise TypeError(f"shmshare_once({key!r}): the factory's value cannot be "
                        f"shared between workers: {exc}") from exc
    return value


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it pickles, else a RuntimeError carrying its repr."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(repr(exc))


def _run_teardowns(run_dir: Path, config: pytest.Config) -> None:
    if "once-registry.key" not in os.listdir(run_dir):
        return
    failures = []
    with _registry(run_dir) as reg:
        for key, rec in reg.items():
            if rec.get("state") == "done" and rec.get("teardown") is not None:
                try:
                    rec["teardown"](rec["value"])
                except Exception as exc:  # report every failure, not just the first
                    failures.append(f"{key}: {exc!r}")
    _report_teardowns(config, failures)


def _report_teardowns(config: pytest.Config, failures: list[str]) -> None:
    if failures:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        message = "shmshare_once teardown failed: " + "; ".join(failures)
        if reporter is not None:
            reporter.write_line(message, red=True)
        raise pytest.UsageError(message)


@pytest.fixture(scope="session")
def shmshare_run_dir(pytestconfig: pytest.Config) -> Path:
    """The project directory of this test run (shared by all its workers)."""
    return pytestconfig.stash[_run_key].directory()


def _remote_of(config: pytest.Config) -> RemoteRun | None:
    return config.stash[_run_key].remote


@pytest.fixture(scope="session")
def shmshare_once(pytestconfig: pytest.Config) -> Callable[..., Any]:
    """``shmshare_once(key, factory, teardown=None)``: run ``factory`` once per test run."""
    remote = _remote_of(pytestconfig)
    if remote is not None:
        def failed(key: str, rec: dict[str, Any]) -> BaseException:
            err = OnceError(f"shmshare_once({key!r}) failed in another worker: "
                            f"{rec['error']!r}")
            err.__cause__ = rec["error"]
            return err

        def remote_once(key: str, factory: Callable[[], Any],
                        teardown: Callable[[Any], Any] | None = None) -> Any:
            if not isinstance(key, str):
                raise TypeError(f"shmshare_once key must be a str, not {type(key).__name__}")
            return remote.once(key, factory, teardown, failed)

        return remote_once
    run_dir = pytestconfig.stash[_run_key].directory()

    def once(key: str, factory: Callable[[], Any],
             teardown: Callable[[Any], Any] | None = None) -> Any:
        return _once(run_dir, key, factory, teardown)

    return once


@pytest.fixture(scope="session")
def shared_dict(pytestconfig: pytest.Config) -> Iterator[SharedDict[Any, Any]]:
    """A SharedDict shared by every worker of this test run."""
    from .objects.dict import SharedDict

    remote = _remote_of(pytestconfig)
    d: SharedDict[Any, Any] = (
        remote.open("shared_dict") if remote is not None else
        SharedDict("shared_dict", project_dir=pytestconfig.stash[_run_key].directory(),
                   persist=True))
    yield d
    d.detach()


@pytest.fixture(scope="session")
def shared_lock(pytestconfig: pytest.Config) -> Iterator[Any]:
    """A robust lock shared by every worker of this test run (``with shared_lock: ...``)."""
    from .objects.dict import SharedDict

    remote = _remote_of(pytestconfig)
    holder: SharedDict[Any, Any] = (
        remote.open("shared_lock") if remote is not None else
        SharedDict("shared_lock", project_dir=pytestconfig.stash[_run_key].directory(),
                   persist=True))
    yield holder.lock
    holder.detach()
