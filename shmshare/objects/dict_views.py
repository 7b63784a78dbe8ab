"""The keys, items and values views of :class:`~shmshare.SharedDict`: the
``collections.abc`` views, iterating through the dict's batched scans (and in
reverse, which the abc views do not)."""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, KeysView, ValuesView
from typing import TYPE_CHECKING, Any, TypeVar

from .codec import loads

if TYPE_CHECKING:
    from .dict import SharedDict

K = TypeVar("K")
V = TypeVar("V")


class _KeysView(KeysView[K]):
    _mapping: SharedDict[K, Any]

    def __reversed__(self) -> Iterator[K]:
        return reversed(self._mapping)


class _ItemsView(ItemsView[K, V]):
    _mapping: SharedDict[K, V]

    def __iter__(self) -> Iterator[tuple[K, V]]:
        return self._mapping._iter_items()

    def __reversed__(self) -> Iterator[tuple[K, V]]:
        for batch in self._mapping._batches(values=True, reverse=True):
            for _, key, vb in batch:
                yield key, loads(vb)


class _ValuesView(ValuesView[V]):
    _mapping: SharedDict[Any, V]

    def __iter__(self) -> Iterator[V]:
        return self._mapping._iter_values()

    def __reversed__(self) -> Iterator[V]:
        for batch in self._mapping._batches(values=True, reverse=True):
            for _, _, vb in batch:
                yield loads(vb)
