"""The mappings of shmshare segments this process holds, by shmid: what lets an
object unpickled here share a mapping it already has (naming.address) instead
of attaching the segment again."""

from __future__ import annotations

import weakref

from .. import _core

__all__ = ["MAPPED", "live_attachment", "mapped"]

# The read-write attachments of shmshare segments in this process, by shmid (forked
# children inherit them along with the mappings), each by a weak reference: a plain
# dict of them, not a WeakValueDictionary, whose Python __setitem__ cost every attach
# microseconds.  The last release of an attachment deletes its entry
# (binding._release_last); one whose attachment was dropped unreleased (an interrupt
# half-way through an open) reads as absent.  While an attachment lives, its shmid
# names that very segment: the kernel never gives a live segment's id to another.
MAPPED: dict[int, weakref.ref[_core.Attachment]] = {}


def mapped(shmid: int) -> _core.Attachment | None:
    """The live attachment of ``shmid`` that MAPPED holds, or None."""
    ref = MAPPED.get(shmid)
    return ref() if ref is not None else None


class _Pin:
    __slots__ = ("__weakref__",)


def live_attachment(shmid: int) -> tuple[_core.Attachment, object] | None:
    """This process's read-write attachment of segment ``shmid``, if it has a live one,
    and a pin that keeps it mapped while it lives: the pin counts as one of the
    mapping's users, so the release of its last other user (a finalizer the
    garbage collector may run at any allocation) does not detach it meanwhile."""
    att = mapped(shmid)
    if att is None:
        return None
    pin = _Pin()
    att.add_user(pin)
    return (att, pin) if att.attached else None
