"""The pytest plugin's objects on a Redis store, for xdist workers on several hosts.

Used when the run is given a url (``--shmshare-url`` or ``$SHMSHARE_URL``); the
controller hands it, with the run id, to every worker (``workerinput``), so a
worker started on another host (``--tx ssh=...``) needs neither the option nor
the variable.  Imported only then (it needs redis-py).

* Every object of the run is named ``pytest-<run id>-...``, so concurrent runs
  on one server never share state.
* The controller opens the run's dicts first and holds them until the run
  ends: they are not persistent, so if the controller dies they expire from
  the server one lifetime (30 s) later; otherwise the controller runs the
  ``shmshare_once`` teardowns and removes them.
* ``shmshare_once``: the worker that computes a key's value holds a leased
  Redis lock of that key while the factory runs; the others wait on the
  server for the lock, then find the value.  A worker that dies mid-factory
  stops renewing, and one lease later the next worker takes the lock, finds
  no value and runs the factory itself.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .objects.dict import SharedDict
from .stores.redis.connection import RedisStore
from .stores.redis.lock import Lock

__all__ = ["RemoteRun"]

ONCE_LEASE = 10.0  # seconds a dead factory worker holds its key before another takes over


@dataclass
class RemoteRun:
    """One test run's objects on the store at ``url``."""

    url: str
    run_id: str
    _held: list[SharedDict[Any, Any]] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return f"pytest-{self.run_id}-"

    def open(self, what: str) -> SharedDict[Any, Any]:
        """The run's dict ``what`` (registry, shared_dict, shared_lock), made on first use."""
        return SharedDict(name=self.prefix + what, url=self.url)

    def hold_objects(self) -> None:
        """In the controller: open the run's dicts, keeping them alive until :meth:`end`."""
        self._held = [self.open(what) for what in ("once", "shared_dict", "shared_lock")]

    def _once_lock(self, key: str) -> Lock:
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]  # names may not hold braces
        return Lock(f"{self.prefix}once-{digest}", store=RedisStore(self.url),
                    lease=ONCE_LEASE)

    def once(self, key: str, factory: Callable[[], Any],
             teardown: Callable[[Any], Any] | None,
             failed: Callable[[str, dict[str, Any]], BaseException]) -> Any:
        """``shmshare_once`` on the store: run ``factory`` once across every worker."""
        from .pytest_plugin import _run_factory

        reg = self.open("once")
        try:
            rec = reg.get(key)
            if rec is None or rec["state"] == "running":
                lock = self._once_lock(key)
                with lock:
                    rec = reg.get(key)
                    if rec is None or rec["state"] == "running":  # nobody, or one who died
                        reg[key] = {"state": "running", "pid": os.getpid()}
                        return _run_factory(reg, key, factory, teardown)
            if rec["state"] == "error":
                raise failed(key, rec)
            return rec["value"]
        finally:
            reg.detach()

    def end(self) -> list[str]:
        """In the controller, after every worker: run the teardowns, remove the objects.

        Returns the teardown failures (``"key: error"``).
        """
        failures = []
        if not self._held:
            self.hold_objects()
        reg = self._held[0]
        try:
            for key, rec in reg.items():
                if rec.get("state") == "done" and rec.get("teardown") is not None:
                    try:
                        rec["teardown"](rec["value"])
                    except Exception as exc:  # report every failure, not just the first
                        failures.append(f"{key}: {exc!r}")
        finally:
            keys = list(reg.keys())
            for key in keys:
                self._once_lock(key).destroy()
            for d in self._held:
                d.unlink()
            self._held = []
        return failures
