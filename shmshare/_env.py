"""Reading an environment variable without ``os.environ.get``'s Python frames.

``os.environ.get(name)`` runs four Python functions and, for an unset name,
raises and catches a KeyError: several microseconds, tens in a fresh process,
on the path of every first open.  ``os.environ`` keeps its values, encoded, in
a dict (``_data``) that its every change updates; :func:`getenv` reads that
dict when there is one (CPython on POSIX), else asks ``os.environ``.
"""

from __future__ import annotations

import os

__all__ = ["getenv"]


def getenv(name: str) -> str | None:
    """``os.environ.get(name)`` (None if unset); ``name`` is ASCII."""
    data = getattr(os.environ, "_data", None)  # looked up each time: os.environ may be replaced
    if type(data) is not dict or os.name != "posix":
        return os.environ.get(name)
    value = data.get(name.encode("ascii"))
    if value is None:
        return None
    if type(value) is not bytes:
        return os.environ.get(name)
    return os.fsdecode(value)
