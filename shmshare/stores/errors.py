"""Errors of the stores that are not shared memory (Redis): each is a ShmshareError
and the builtin a caller would catch, and pickles (see :mod:`shmshare.errors`)."""

from __future__ import annotations

from shmshare.errors import _MessageError

__all__ = ["LockLostError", "StoreUnavailableError", "UntrustedStoreError"]


class StoreUnavailableError(_MessageError, ConnectionError):
    """The store's server could not be reached (or refused us) within the bounded retries."""


class UntrustedStoreError(_MessageError, PermissionError):
    """Refused to use a store that anyone on the network could write to.

    Values are unpickled, and unpickling what others can write is code
    execution: an unauthenticated TCP connection to a host that is not this
    machine needs ``trust=True``.
    """


class LockLostError(_MessageError, RuntimeError):
    """This holder's lease ended (it was paused or cut off past the lease) and
    the lock, permit or item may now belong to someone else."""
