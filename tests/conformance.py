"""CPython's own manager tests, run against ``shmshare.Manager``.

``test._test_multiprocessing.install_tests_in_module_dict(globs, method,
only_type="manager")`` generates the ``WithManager*`` TestCase classes that
CPython runs against ``multiprocessing.Manager()``.  :func:`install` takes
the same classes and swaps their manager mixin for one whose class setup
makes a ``shmshare.Manager`` instead (on a project directory of its own, so
that every segment it made is checked for at class teardown).

One module per start method (``test_conformance_<method>.py``), as CPython
has ``test_multiprocessing_<method>``: the generated module-level setup sets
the start method for the whole process while that module runs, and child
processes of spawn and forkserver import the classes from that module by
name.  pytest runs them as ordinary unittest classes, so xdist spreads them.

``test_conformance_redis_fork.py`` and ``_spawn.py`` run the same classes against
``shmshare.Manager(url=...)`` on a redis-server it starts for the module
(:mod:`redis_server`); the tests that are specific to shared memory (or to a
server process) skip there, each with its reason (``REDIS_SKIP``).  With
``SHMSHARE_CONFORMANCE_URL`` set to a Redis url, the other modules run against
that server instead.
"""

from __future__ import annotations

import gc
import multiprocessing
import multiprocessing.forkserver
import os
import shutil
import sys
import tempfile
import unittest
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from helpers import segments_created_by

import shmshare

# The children that spawn and forkserver start import this module (through
# test_conformance_<method>) to find the test classes.  They run no test and
# need no pytest, whose import is most of their start-up time.
UNDER_PYTEST = "pytest" in sys.modules

try:
    import test._test_multiprocessing as tm
except ImportError:
    if UNDER_PYTEST:
        import pytest

        pytest.skip("this Python has no test package (CPython's test suite)",
                    allow_module_level=True)
    raise

# Each builds its own BaseManager subclass (register() of server-side objects,
# a remote server, a restart on one address): shmshare has no server process,
# so they test nothing shmshare provides.  Every other generated class runs.
EXCLUDED = {
    "WithManagerTestMyManager": "builds a BaseManager subclass with register()ed server types",
    "WithManagerTestRemoteManager": "connects a client to a BaseManager server by address",
    "WithManagerTestManagerRestart": "restarts a BaseManager server on the same address",
}

# Tests that fail for a reason fixed elsewhere: name -> reason (strict xfail).
XFAIL: dict[str, str] = {}  # "Class.test": reason, for a known difference (none today)

# Tests that cannot pass on a Redis store, by design: "Class.test" -> reason (skipped).
REDIS_SKIP: dict[str, str] = {}  # none today: all 60 pass on Redis

# The redis-server of a test_conformance_redis_* module (started by its setUpModule).
_redis: Any = None


class ShmshareManagerMixin(tm.ManagerMixin):  # type: ignore[misc,name-defined]
    """CPython's ManagerMixin with ``shmshare.Manager`` in place of ``multiprocessing.Manager``."""

    @classmethod
    def setUpClass(cls) -> None:
        tm.BaseMixin.setUpClass.__func__(cls)
        cls._segments_before = set(segments_created_by(os.getpid()))
        cls._project_dir = Path(tempfile.mkdtemp(prefix="shmshare-conformance-"))
        url = os.environ.get("SHMSHARE_CONFORMANCE_URL")
        if getattr(cls, "_on_redis", False):
            url = _redis.unix_url
        cls.manager = (shmshare.Manager(url=url, lease=2.0) if url else
                       shmshare.Manager(project_dir=cls._project_dir))
        if getattr(cls, "_on_redis", False):  # never a silent run on shared memory
            assert cls.manager._url == url and cls.manager._store is not None

    @classmethod
    def tearDownClass(cls) -> None:
        cls.manager.shutdown()
        cls.manager.join()
        cls.manager = None
        tm.BaseMixin.tearDownClass.__func__(cls)  # collects garbage
        left = list((cls._project_dir / "managers").glob("*/*"))
        shutil.rmtree(cls._project_dir, ignore_errors=True)
        leaked = set(segments_created_by(os.getpid())) - cls._segments_before
        assert not left, f"manager shutdown left objects behind: {left}"
        assert not leaked, f"the tests of {cls.__name__} leaked segments: {sorted(leaked)}"


if UNDER_PYTEST:
    import pytest

    @pytest.fixture(autouse=True)
    def _no_segment_leak() -> Iterator[None]:
        """Replaces the suite's per-test leak check: a Manager's objects live until its
        shutdown, at class teardown, where ShmshareManagerMixin checks for leaks instead."""
        yield
        gc.collect()


def _xfail(method: Any, reason: str) -> Any:
    import pytest

    def test(self: Any) -> None:
        method(self)
    test.__name__ = method.__name__
    test.__doc__ = method.__doc__
    return pytest.mark.xfail(strict=True, reason=reason)(test)


def _set_up_module(generated_setup: Any, start_method: str, module: str,
                   redis: bool = False) -> Any:
    def setUpModule() -> None:
        generated_setup()
        if redis:
            global _redis
            import redis_server

            if redis_server.REDIS_SERVER is None:
                raise unittest.SkipTest("redis-server is not installed (apt-get install "
                                        "redis-server); the Redis conformance run needs one")
            _redis = redis_server.start_server(Path(tempfile.mkdtemp(prefix="shmshare-rc-")))
        if start_method == "forkserver":
            # Fork the children from a server that has imported what they need,
            # as CPython preloads its own test module; restart it to apply that.
            multiprocessing.set_forkserver_preload(
                ["test._test_multiprocessing", "shmshare", module])
            multiprocessing.forkserver._forkserver._stop()  # type: ignore[attr-defined]
    return setUpModule


def _tear_down_module(generated_teardown: Any, redis: bool) -> Any:
    def tearDownModule() -> None:
        global _redis
        try:
            generated_teardown()
        finally:
            if redis and _redis is not None:
                import redis_server

                redis_server.stop_server(_redis.proc)
                shutil.rmtree(_redis.socket_path.parent, ignore_errors=True)
                _redis = None
    return tearDownModule


def _skip(method: Any, reason: str) -> Any:
    def test(self: Any) -> None:
        self.skipTest(reason)
    test.__name__ = method.__name__
    test.__doc__ = method.__doc__
    return test


def install(globs: dict[str, Any], start_method: str, *, redis: bool = False) -> None:
    """Put CPython's manager test classes for ``start_method`` into the module ``globs``
    (``redis``: against ``Manager(url=...)`` on a redis-server of the module's own)."""
    generated: dict[str, Any] = {"__name__": globs["__name__"]}
    tm.install_tests_in_module_dict(generated, start_method, only_type="manager")
    for name, cls in generated.items():
        if not (isinstance(cls, type) and issubclass(cls, unittest.TestCase)):
            continue
        if name in EXCLUDED:
            continue
        base = cls.__bases__[0]  # the _Test* class; the others are the mixin and TestCase
        body: dict[str, Any] = {"__module__": globs["__name__"], "__qualname__": name}
        for key, reason in XFAIL.items():
            cname, _, tname = key.partition(".")
            if cname == name and UNDER_PYTEST:
                body[tname] = _xfail(getattr(base, tname), reason)
        if redis:
            body["_on_redis"] = True
            for key, reason in REDIS_SKIP.items():
                cname, _, tname = key.partition(".")
                if cname == name:
                    body[tname] = _skip(getattr(base, tname), reason)
        globs[name] = type(name, (base, ShmshareManagerMixin, unittest.TestCase), body)
    if UNDER_PYTEST:
        globs["_no_segment_leak"] = _no_segment_leak
        globs["pytestmark"] = pytest.mark.timeout(120)  # a hang fails its test, not the run
    globs["setUpModule"] = _set_up_module(generated["setUpModule"], start_method,
                                          globs["__name__"], redis)
    globs["tearDownModule"] = _tear_down_module(generated["tearDownModule"], redis)
