"""A heap's extents found and removed from its main segment's shmid alone, no handle
needed (``src/extent_removal.c``; the protocol is at the top of ``src/extent.c``):
what removal, the last detach, gc and ``shmshare ls`` use, and the tests' hooks
into growth."""

from __future__ import annotations

from . import Attachment
from ._lib import ffi, lib

__all__ = ["extent_candidates", "never_grew", "reap_after_detach", "reap_extents",
           "set_test_fail_point", "set_test_key_mask", "sweep_extent"]


def sweep_extent(shmid: int, *, dry_run: bool = False) -> int | None:
    """gc: if ``shmid`` is an extent of ours whose heap is gone, remove it (unless
    ``dry_run``) and return the main shmid it names (-1: unfinished, names
    none); else None.  The argument is in ``src/extent.c``."""
    main = ffi.new("int64_t *")
    return int(main[0]) if lib.shms_ext_sweep(shmid, int(dry_run), main) else None


def reap_extents(main_shmid: int, token: int = 0, *, force: bool = False) -> int:
    """Remove the extents of the heap whose main segment is ``main_shmid``: with
    ``force`` (the caller removes that segment and is its only user) at once,
    else only if that segment is gone.  Never reads the heap header, so a
    damaged heap stays removable.  Returns how many were removed."""
    return int(lib.shms_ext_reap(main_shmid, token, int(force)))


def reap_after_detach(main_shmid: int, token: int = 0, *, fresh: bool = False) -> int:
    """What a mapping's last shmdt runs (src/extent_removal.c): ``reap_extents`` if
    ``main_shmid`` is gone, skipping the table walk when ``fresh`` (the header
    counted no extent right before the shmdt) and slot 1's keys hold nothing."""
    return int(lib.shms_ext_reap_detached(main_shmid, token, int(fresh)))


def never_grew(att: Attachment, offset: int, size: int) -> bool:
    """Whether the heap at ``offset`` of ``att`` (``size`` bytes) is whole and never
    grew, read after its main segment's IPC_RMID: then it has no extent for
    ``reap_extents(force=True)`` to find (src/extent_removal.c)."""
    if offset < 0 or size <= 0 or offset + size > att.size or not att.attached:
        return False
    return bool(lib.shms_heap_never_grew(att.pointer(offset), size))


def extent_candidates(main_shmid: int) -> list[int]:
    """The shmids at the extent keys of the heap whose main segment is ``main_shmid``,
    found without attaching anything (a stale extent of an earlier segment with the
    same kernel index, or a stranger, may be among them: only a header can tell)."""
    cap = 64 * 8
    ids = ffi.new("int32_t[]", cap)
    n = int(lib.shms_ext_candidates(main_shmid, ids, cap))
    return [int(ids[i]) for i in range(n)]


def set_test_fail_point(point: int) -> None:
    """Tests only: 1 makes this process ``_exit(70)`` right after the next extent's
    shmget (the moment before anything identifies the segment), 2 right before
    it (the slot is PENDING); 0 turns it off."""
    lib.shms_test_fail_point(point)


def set_test_key_mask(mask: int) -> None:
    """Tests only: derive extent keys from ``main shmid & mask`` (a ``2**k - 1``
    below ``0x7FFF``) instead of its low 15 bits, so that live heaps share keys as
    they do on a kernel booted with ``ipcmni_extend``; 0 restores the default."""
    lib.shms_test_idx_mask(mask)
