"""A segment's binding and its release: what must be known to let an attachment go.

A :class:`Binding` is made by :mod:`.attach` (which opens and creates) and held
by the finalizer, never the ``Segment``.  ``release`` detaches and, for the
last user of a named segment, removes it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path

from .. import _core
from ..errors import SegmentRemovedError, ShmPermissionError, ShmshareError
from .handoff import expect_handoff
from .header import HEADER_SIZE, Header
from .keys import KeyFile
from .lifecycle import Found, destroy
from .mapped import MAPPED, mapped

__all__ = ["Binding", "names_us", "release"]


class Binding:
    """What the finalizer needs to release a segment — never the Segment itself."""

    __slots__ = (
        "__weakref__",
        "_key_path",
        "_project_dir",
        "attachment",
        "detach_hooks",
        "header",
        "key",
        "kind",
        "name",
        "offset",
        "persist",
        "pidns_noted",
        "release_hooks",
        "released",
        "removed",
        "shmid",
        "size",
        "stat",
        "trust",
    )

    def __init__(self, *, kind: str, shmid: int, key: int, attachment: _core.Attachment,
                 offset: int, size: int, header: Header | None = None, name: str | None = None,
                 project_dir: Path | str | None = None, key_path: Path | str | None = None,
                 stat: _core.ShmStat | None = None, pidns_noted: bool = False) -> None:
        self.kind = kind
        self.shmid = shmid
        self.key = key
        self.attachment = attachment
        self.offset = offset
        self.size = size
        self.header = header
        self.name = name
        # Paths made on first use: the first open of a process would pay for pathlib.
        self._project_dir = project_dir
        self._key_path = key_path
        self.persist = header.persist if header is not None else True
        self.released = False
        self.removed = False
        # Set by objects opened with trust=True: removing a segment another
        # user owns then runs its destroy logic (naming.lifecycle.destroy).
        self.trust = False
        # The segment's IPC_STAT taken while opening it (before our shmat), for the
        # trust check that follows at once (Segment._stat_at_open); None: not kept.
        self.stat = stat
        # True when the open already noted our PID namespace in the header
        # (_core.named_open does): Segment does it otherwise.
        self.pidns_noted = pidns_noted
        self.release_hooks: list[Callable[[], None]] = []
        expect_handoff()  # in a multiprocessing child: its exit waits for receivers
        if header is not None and not attachment.readonly:
            MAPPED[shmid] = weakref.ref(attachment)  # see live_attachment
        # Run by an explicit detach before it counts live views: an object's
        # own cached view (SharedArray's) must not make its detach a BufferError.
        self.detach_hooks: list[Callable[[], None]] = []
        # Last: the bindings that use the mapping are weak references, not a count, so
        # a binding dropped half-made (an interrupt) leaves no use counted for good.
        attachment.add_user(self)

    @classmethod
    def of_found(cls, found: Found, name: str, project_dir: Path | str,
                 key_path: Path | str) -> Binding:
        """The binding of ``name``'s segment, as ``found`` under its key file's lock."""
        return cls(kind=found.header.kind, shmid=found.shmid, key=found.key,
                   attachment=found.attachment, offset=HEADER_SIZE,
                   size=found.header.payload_size, header=found.header, name=name,
                   project_dir=project_dir, key_path=key_path, stat=found.stat_before)

    @property
    def project_dir(self) -> Path | None:
        if isinstance(self._project_dir, str):
            self._project_dir = Path(self._project_dir)
        return self._project_dir

    @property
    def key_path(self) -> Path | None:
        if isinstance(self._key_path, str):
            self._key_path = Path(self._key_path)
        return self._key_path


def release(b: Binding) -> None:
    """Detach; if this was the last attachment of a named segment, remove it.

    Runs once per Segment: from ``detach()``, when the Segment is garbage
    collected, at interpreter exit, or at the exit of a multiprocessing child.

    "Last" is decided after our own shmdt: the nattch the kernel reports
    then counts the others only, and whoever brings it to 0 sees 0.  Deciding
    before the shmdt (nattch > 1: someone else will remove it) let two
    processes detaching at once each count the other and both leave, the
    segment with nattch 0 and nobody to remove it.  A detach that sees others
    attached leaves without the key file's lock; one that sees 0 takes the
    lock and checks again before removing: attaching by name takes the same
    lock, so nobody attaches between that check and the removal.
    """
    if b.released:
        return
    b.released = True
    try:
        for hook in b.release_hooks:
            hook()  # e.g. the heap handle lets go of its extents
    finally:
        if not b.attachment.drop_user(b):
            _release_last(b)
        # else another binding of this process uses the mapping (an object unpickled
        # here, see naming.address): it is not ours to detach, nor the last use.


def _release_last(b: Binding) -> None:
    if mapped(b.shmid) is b.attachment:
        del MAPPED[b.shmid]  # released: never shared again, even while views keep it mapped
    try:
        if b._key_path is not None and not b.persist and not b.removed:
            _detach_removing_if_last(b)
    finally:
        if b.attachment.attached and not b.attachment.views_alive(collect=False):
            b.attachment.detach()
        # else: views still use the memory; the attachment's own destructor
        # calls shmdt when the last of them goes away.


def names_us(kf: KeyFile, b: Binding) -> bool:
    """The locked key file ``kf`` still names the segment bound by ``b``.

    Device and inode alone are not enough: a key file deleted by hand (or by
    a tmp cleaner) and created again for a new object may reuse the inode.
    The record's key must also lead to this very segment.
    """
    assert b.header is not None
    if (kf.dev, kf.ino) != (b.header.dev, b.header.ino):
        return False
    record = kf.read()
    if record is None:
        return False
    try:
        key = kf.key(record.proj_id)
        return key == b.key and _core.shmget(key, 0, 0) == b.shmid
    except ShmshareError:
        return False


def _detach_removing_if_last(b: Binding) -> None:
    assert b._key_path is not None and b.header is not None
    if not b.attachment.views_alive(collect=False):
        # Not the last, decided without the lock: whoever brings nattch to 0 sees
        # 0 after its own shmdt (nattch only grows by an attach, and one by name
        # holds the lock, which the removal below takes and checks again under).
        b.attachment.detach()
        try:
            st = _core.stat(b.shmid)
        except SegmentRemovedError:
            return
        if st.nattch or st.dest:
            return
    with KeyFile.locked(b._key_path, create=False) as kf:  # (a str: no pathlib per detach)
        # A key file that is gone or names another incarnation stays as it is;
        # the segment is still ours, and nobody can find it by name any more.
        named = kf is not None and names_us(kf, b)
        ours = 1  # our attachment, still counted in nattch while views keep it
        if not b.attachment.views_alive(collect=False):
            b.attachment.detach()
            ours = 0
        try:
            st = _core.stat(b.shmid)
        except SegmentRemovedError:
            return
        if st.nattch > ours or st.dest:
            return  # another attachment (maybe a forked child) still uses it
        try:
            destroy(Found(b.shmid, b.key, b.header, b.attachment, st), trust=b.trust)
        except ShmPermissionError:
            return  # another user's segment (a refused open, say): theirs to remove
        if named:
            assert kf is not None
            kf.unlink()
        b.removed = True
