"""Asynchronous exceptions (Ctrl-C, a signal handler that raises) at any bytecode of
``with lock:`` on the sync primitives never leave the primitive held by this live
process (test_interrupts.py does the same for the objects' own locks).

Found by benchmarks/ctrl_c_torture.py: a Ctrl-C landing in ``SharedLock.__enter__``
after the C call had taken the lock left it held by a live process, and every
process of the group then waited for it forever."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from shmshare import SharedBoundedSemaphore, SharedLock, SharedRLock, SharedSemaphore

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason=(
    "CPython 3.10 checks for signals before almost every bytecode, even between a "
    "with block's end and its __exit__ call: the guarantee needs 3.11+"))


class Interrupted(BaseException):
    """What the test's signal handler raises (BaseException: nothing may swallow it)."""


_ARMED = [False]


def _raise(signum: int, frame: object) -> None:
    if _ARMED[0]:  # a signal handled after the op (timer cancelled late) raises nothing
        raise Interrupted


@pytest.fixture
def interrupter() -> Iterator[Callable[[Callable[[], Any], float], bool]]:
    """``hit(op, delay)``: run ``op`` with SIGALRM raising Interrupted after ``delay`` s."""
    old = signal.signal(signal.SIGALRM, _raise)

    def hit(op: Callable[[], Any], delay: float) -> bool:
        try:
            try:
                _ARMED[0] = True
                signal.setitimer(signal.ITIMER_REAL, delay)
                op()
            finally:
                _ARMED[0] = False
                signal.setitimer(signal.ITIMER_REAL, 0)
        except Interrupted:
            return True
        return False

    try:
        yield hit
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _free(prim: Any) -> bool:
    if isinstance(prim, SharedLock):
        return not prim.locked()
    if isinstance(prim, SharedRLock):
        return prim._r.lock_owner() == 0
    return prim.get_value() == 2


@pytest.mark.parametrize("make", [SharedLock, SharedRLock,
                                  lambda: SharedSemaphore(2),
                                  lambda: SharedBoundedSemaphore(2)],
                         ids=["Lock", "RLock", "Semaphore", "BoundedSemaphore"])
def test_interrupted_with_block_leaves_the_primitive_free(
        interrupter: Callable[[Callable[[], Any], float], bool], make: Callable[[], Any]) -> None:
    """Interrupts swept over every bytecode of ``with prim:`` entry and exit."""
    prim = make()

    def block() -> None:
        with prim:
            pass

    try:
        # The sweep goes round until 50 interrupts have landed inside the call: how
        # many of a round land depends on the machine's speed and load, not on us.
        hits = tries = 0
        while hits <= 50 and tries < 30_000:
            delay = 1e-6 + (tries % 1500) * 1e-7
            hits += interrupter(block, delay)
            tries += 1
            assert _free(prim), f"left held by an interrupt {delay:.7f} s in"
        assert hits > 50, f"only {hits} of {tries} calls were interrupted: too few to prove"
    finally:
        prim.detach()
