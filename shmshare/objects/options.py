"""The conventions every shared object's constructor shares: the keywords it takes
(:func:`check_options`), where its data may be a str (:func:`refuse_str_data`),
which store it opens on (:func:`store_url`), and how unpickling makes one without
running a constructor (:func:`unconstructed`).

It imports nothing heavy: a dict's first use pulls it in (tests/test_startup.py).
"""

from __future__ import annotations

import os
from types import BuiltinFunctionType
from typing import TypeVar

from .._env import getenv
from ..errors import ShmTypeError, ShmValueError
from ..stores import URL_ENV

__all__ = ["check_options", "refuse_str_data", "store_url", "unconstructed"]

T = TypeVar("T")


def check_options(name: object, create: object, project_dir: object, persist: object,
                  mode: object, trust: object) -> None:
    """The keywords every shared object takes: fail at construction, not at first use."""
    if name is not None and not isinstance(name, str):
        raise ShmTypeError(f"name must be a str or None, not {type(name).__name__}")
    if create not in (None, True, False):
        raise ShmTypeError(f"create must be None, True or False, not {create!r}")
    if create is False and name is None:
        raise ShmValueError("create=False opens an existing object, which needs a name=")
    if project_dir is not None and not isinstance(project_dir, (str, os.PathLike)):
        raise ShmTypeError(f"project_dir must be a path, not {type(project_dir).__name__}")
    for what, value in (("persist", persist), ("trust", trust)):
        if not isinstance(value, bool):
            raise ShmTypeError(f"{what} must be True or False, not {value!r}")
    if not isinstance(mode, int) or isinstance(mode, bool) or not 0 <= mode <= 0o777:
        raise ShmTypeError(f"mode must be permission bits such as 0o600, not {mode!r}")


def unconstructed(cls: type[T]) -> T:
    """An object of ``cls`` that no ``__new__`` or ``__init__`` of Python code has
    seen (unpickling: its state is bound next).  Not ``cls.__new__``, which may
    dispatch on $SHMSHARE_URL (StoreDispatch); not ``object.__new__`` either, which
    refuses a class with a C base of its own layout (SharedList's LengthWord): the
    ``__new__`` of the first C class in the MRO."""
    for base in cls.__mro__:
        new = vars(base).get("__new__")
        if type(new) is BuiltinFunctionType:
            return new(cls)  # type: ignore[no-any-return]
    raise AssertionError("object, in every MRO, has a C __new__")


def refuse_str_data(cls_name: str, data: object, builtin: str) -> None:
    """A str where a container's data goes is a name given positionally, by all odds.

    ``list("jobs")`` is four characters, but ``SharedList("jobs")`` was a name
    in older shmshare: refuse it rather than guess either way.
    """
    if isinstance(data, str):
        raise ShmTypeError(
            f"{cls_name}({data!r}): a str is not taken as data or as a name here; pass "
            f"name={data!r} to name it, or {cls_name}({builtin}({data!r})) for its characters")


def store_url(url: str | None) -> str | None:
    """The store url an object is opened with: ``url``, else ``$SHMSHARE_URL``, else None
    (shared memory)."""
    if url is not None:
        if not isinstance(url, str) or not url:
            raise ShmTypeError(f"url must be a store url such as 'redis://host:6379/0', not "
                               f"{url!r}")
        return url
    return getenv(URL_ENV) or None
