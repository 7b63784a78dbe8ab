"""Checked by mypy (tests/test_typing.py), never run: the public types as a user sees them."""

from __future__ import annotations

from typing import Any

from typing_extensions import assert_type

import shmshare
from shmshare import Manager, SharedDict, SharedList, SharedSet


def containers() -> None:
    d: SharedDict[str, int] = SharedDict({"a": 1})
    assert_type(d["a"], int)
    assert_type(d.get("a"), Any)
    assert_type(list(d), list[str])
    assert_type(d.copy(), dict[str, int])
    assert_type(d.popitem(), tuple[str, int])
    d["b"] = 2
    d["c"] = "three"  # type: ignore[assignment]

    lst: SharedList[float] = SharedList([1.0, 2.5])
    assert_type(lst[0], float)
    assert_type(lst[1:], list[float])
    lst.append(3.0)

    s: SharedSet[bytes] = SharedSet({b"x"})
    assert_type(s.pop(), bytes)
    assert_type(s.copy(), set[bytes])
    s.add(1)  # type: ignore[arg-type]


def manager() -> None:
    with Manager() as m:
        md = m.dict()
        plain: SharedDict[Any, Any] = md
        assert_type(md, shmshare.SharedDictProxy[Any, Any])
        assert_type(m.list(), SharedList[Any])
        assert_type(m.Value("i", 1), shmshare.SharedValue)
        assert_type(m.Array("c", b"hi"), shmshare.SharedTypedArray)
        assert_type(m.Queue(), shmshare.SharedQueue)
        assert_type(m.Lock(), shmshare.SharedLock)
        assert_type(shmshare.name_of(plain), str | None)
        assert_type(shmshare.lock_of(plain), shmshare.ObjectLock)


def keywords() -> None:
    SharedDict(name="jobs", create=False, project_dir="/tmp/x", persist=True, mode=0o600,
               trust=False)
    SharedDict(persit=True)  # type: ignore[call-arg]
    shmshare.SharedQueue(maxsize="tasks")  # type: ignore[arg-type]
