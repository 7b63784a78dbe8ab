"""Stores: what a shared object keeps its state in.

A shared object (``SharedDict``, ``SharedQueue``, a lock...) is its semantics
written once; the *store* is where its entries, counters and waiters live.
The shared-memory heap (``shmshare._core.heap``) is the first store: one
machine, no server.  Redis (``shmshare.stores.redis``) is the second: any
host that can reach the server, with leases in place of robust mutexes.

The Redis store is a foundation here: connections, leased and fenced locks,
a reliable queue and a dict store, tested on their own.  The objects do not
use it yet (see ``docs/howto/redis.md``).
"""

from shmshare.stores.errors import LockLostError, StoreUnavailableError, UntrustedStoreError

__all__ = ["LockLostError", "StoreUnavailableError", "UntrustedStoreError"]
