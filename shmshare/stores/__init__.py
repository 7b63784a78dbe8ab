"""Stores: what a shared object keeps its state in.

A shared object (``SharedDict``, ``SharedQueue``, a lock...) is its semantics
written once; the *store* is where its entries, counters and waiters live.
The shared-memory heap (``shmshare._core.heap``) is the first store: one
machine, no server.  Redis (``shmshare.stores.redis``) is the second: any
host that can reach the server, with leases in place of robust mutexes.

An object is put on Redis by ``url="redis://..."``, or by ``$SHMSHARE_URL``
(``URL_ENV``) when no url and no project directory is given (see
``docs/howto/redis.md``).
"""

from shmshare.stores.errors import LockLostError, StoreUnavailableError, UntrustedStoreError

__all__ = ["URL_ENV", "LockLostError", "StoreUnavailableError", "UntrustedStoreError"]

URL_ENV = "SHMSHARE_URL"  # the default store url
