"""The operators SharedList and its store twin share, as ListProxy's: ``+`` and ``*``
give plain lists, ``==`` and ``<`` compare as lists; neither is hashable."""

from __future__ import annotations

from typing import Any, SupportsIndex


class ListOperators:
    """On a class with ``copy() -> list``."""

    def copy(self) -> list[Any]:  # (the classes using it define it)
        raise NotImplementedError

    def __add__(self, other: Any) -> list[Any]:
        return self.copy() + other  # type: ignore[no-any-return]

    def __radd__(self, other: Any) -> list[Any]:
        return other + self.copy()  # type: ignore[no-any-return]

    def __mul__(self, n: SupportsIndex) -> list[Any]:
        return self.copy() * n

    __rmul__ = __mul__

    def __eq__(self, other: object) -> bool:
        from .list import SharedList  # (RemoteList is registered as one)

        if isinstance(other, SharedList):
            return self.copy() == other.copy()
        if isinstance(other, list):
            return self.copy() == other
        return NotImplemented

    def __lt__(self, other: Any) -> bool:
        from .list import SharedList

        mine: list[Any] = self.copy()
        return bool(mine < (other.copy() if isinstance(other, SharedList) else other))

    __hash__ = None  # type: ignore[assignment]
