"""a[i] = v on a SharedTypedArray (Manager().Array): written straight through the array's
view in C, and on anything the view refuses handed to the Python path, which converts
or raises as array.array does -- so the outcome of every assignment is array.array's."""

from __future__ import annotations

import array
from typing import Any

import numpy as np
import pytest

from shmshare.objects.typed_array import _STORED, SharedTypedArray


class _Index:
    def __init__(self, n: int) -> None:
        self.n = n

    def __index__(self) -> int:
        return self.n


class _Float:
    def __float__(self) -> float:
        return 2.5


VALUES: list[Any] = [0, 1, -1, 127, 128, 255, 256, -129, 32767, 65535, 2**31 - 1, 2**31,
                     2**32, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30, True, False, 1.5,
                     -0.0, float("inf"), float("nan"), 1e300, 3.4e38, np.int64(7),
                     np.float64(2.25), np.uint8(200), _Index(5), _Float(), "1", b"x", None,
                     [1], 1 + 0j]


def _outcome(target: Any, v: Any) -> tuple[str, Any]:
    try:
        target[0] = v
    except Exception as exc:  # the type is what must agree
        return "raised", type(exc).__name__
    got = target[0]
    return "stored", repr(got)


@pytest.mark.parametrize("typecode", [t for t in "bBhHiIlLqQfd"])
def test_every_assignment_ends_as_array_arrays(typecode: str) -> None:
    a = SharedTypedArray(typecode, 3)
    try:
        for v in VALUES:
            ref = array.array(_STORED.get(typecode, typecode), [0])
            assert _outcome(a, v) == _outcome(ref, v), (typecode, v)
    finally:
        a.detach()


def test_c_and_u_arrays_keep_their_conversions() -> None:
    c = SharedTypedArray("c", b"abc")
    u = SharedTypedArray("u", "abc")
    try:
        c[0] = b"z"
        c[1] = bytearray(b"y")
        assert c[:] == b"zyc"
        for bad in ("z", 65, b"zz"):
            with pytest.raises(TypeError):
                c[2] = bad
        u[0] = "z"
        assert u[:] == "zbc"
        for bad in (65, "zz", b"z"):
            with pytest.raises(TypeError):
                u[1] = bad
        assert u[:] == "zbc"
    finally:
        c.detach()
        u.detach()


def test_a_valid_assignment_takes_no_python_frame() -> None:
    calls: list[Any] = []

    class Counting(SharedTypedArray):
        def _setitem(self, index: Any, value: Any) -> None:
            calls.append(value)
            super()._setitem(index, value)

    a = Counting("d", 4)
    try:
        assert a[0] == 0.0  # the first access builds the view
        a[1] = 2.5
        a[-1] = 3
        assert calls == []
        a[0:2] = [1.0, 2.0]  # a slice: the Python path
        with pytest.raises(TypeError):
            a[2] = "x"  # refused by the view: the Python path raises array's error
        assert calls == [[1.0, 2.0], "x"]
        assert a[:] == [1.0, 2.0, 0.0, 3.0]
        with pytest.raises(IndexError):
            a[4] = 1.0
    finally:
        a.detach()
    with pytest.raises(ValueError, match="detached"):
        a[0] = 1.0
