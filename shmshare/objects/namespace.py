"""``SharedNamespace``: attributes in shared memory, as ``Manager().Namespace()``.

The attribute space is the user's: every name that does not start with ``_``
is shared, including ``name``, ``lock``, ``close``, ``unlink``, ``detach``,
``check``, ``stats``, ``persist``, ``project_dir`` and ``segment`` -- exactly
the names multiprocessing's Namespace stores.  Names starting with ``_`` are
local to the handle, as there.  The library's operations on a namespace are
the module functions (``shmshare.name_of(ns)``, ``shmshare.lock_of(ns)``,
``shmshare.unlink(ns)``...).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._core import AttrItems
from .codec import _PICKLE_REFUSED, PLAIN_TYPES, decode_key, dumps, encode_key, loads
from .heap_object import HeapObject

_pickle_dumps = pickle.dumps

__all__ = ["SharedNamespace"]


class SharedNamespace(AttrItems, HeapObject, kind="namespace"):
    """Attributes in shared memory: ``ns.x = 1`` in one process, ``ns.x`` in another.

    ``SharedNamespace(attrs=None, *, name=None, create=None, project_dir=None,
    persist=False, mode=0o600, trust=False, url=None, **attrs)``: the initial
    attributes (a mapping and/or keywords; a mapping can hold the names the
    handle keywords take, such as ``{"name": "Bob"}`` or ``{"url": ...}``)
    are set only when this call creates the namespace.  A str first argument
    is the name.  ``url=`` (or ``$SHMSHARE_URL``) keeps it on a Redis store.
    """

    _ON_STORES = True

    def __init__(self, attrs: Mapping[str, Any] | str | None = None, /, *,
                 name: str | None = None, create: bool | None = None, project_dir: Any = None,
                 persist: bool = False, mode: int = 0o600, trust: bool = False,
                 url: str | None = None,
                 **more: Any) -> None:
        if isinstance(attrs, str):
            if name is not None:
                raise TypeError("SharedNamespace() got the name twice (positionally and name=)")
            attrs, name = None, attrs
        initial = {**(attrs or {}), **more}
        for key in initial:
            if not isinstance(key, str) or not key or key.startswith("_"):
                raise TypeError(f"attribute names are non-empty str not starting with '_', "
                                f"not {key!r}")
        self._open(name=name, create=create, project_dir=project_dir, persist=persist,
                   mode=mode, trust=trust, url=url,
                   initial=[(k, dumps(v)) for k, v in initial.items()])

    # ns.x, ns.x = v and del ns.x for a name of the user's are AttrItems' slots
    # (ext/dictitems.c): one C call each, the read through the read cache, the
    # key encoded, the value pickled and the store tried; names starting with
    # "_" are the handle's own.  These are where they hand over.
    if TYPE_CHECKING:
        def __getattr__(self, key: str) -> Any: ...

    def _getattr_slow(self, key: str) -> Any:
        data = self._read(key)
        if data is None:
            raise AttributeError(f"'Namespace' object has no attribute {key!r}")
        return self._loaded(data)

    def _setattr_slow(self, key: str, value: Any) -> None:
        kb, n = encode_key(key)
        if type(value) in PLAIN_TYPES:  # pickled whole: straight to the store
            self._heap.dict_store(kb, n, dumps(value))
        else:  # perhaps a large buffer, stored split (HeapObject._store)
            self._store(kb, n, value)

    def _delattr_slow(self, key: str) -> None:
        kb, n = encode_key(key)
        if self._heap.dict_pop(kb, n) is None:
            raise AttributeError(key)

    def _bind_store(self, seg: Any, heap: Any, lock: Any) -> None:
        super()._bind_store(seg, heap, lock)
        hot = getattr(heap, "_hot", None)  # a heap's; a store's entries have none
        if hot is not None:
            self._bind_items(hot, _pickle_dumps, _PICKLE_REFUSED, self._read_cache)

    def __dir__(self) -> list[str]:
        return sorted(k for k, _ in self._items())

    def _items(self) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        seq = -1
        while batch := self._heap.dict_scan(seq, values=True):
            out.extend((decode_key(k), loads(v)) for _, k, v in batch if v is not None)
            seq = batch[-1][0]
        return out

    def __repr__(self) -> str:
        if (gone := self._detached_repr()) is not None:
            return gone
        return "Namespace(" + ", ".join(f"{k}={v!r}" for k, v in sorted(self._items())) + ")"
