"""Every errno path maps to a class that subclasses the builtin, keeps .errno and pickles."""

from __future__ import annotations

import errno
import pickle

import pytest

import shmshare
from shmshare import _core
from shmshare.errors import from_errno

CASES = [
    (errno.EEXIST, shmshare.SegmentExistsError, FileExistsError),
    (errno.ENOENT, shmshare.SegmentNotFoundError, FileNotFoundError),
    (errno.EIDRM, shmshare.SegmentRemovedError, FileNotFoundError),
    (errno.EACCES, shmshare.ShmPermissionError, PermissionError),
    (errno.EPERM, shmshare.ShmPermissionError, PermissionError),
    (errno.ENOMEM, shmshare.ShmLimitError, MemoryError),
    (errno.ENOSPC, shmshare.ShmLimitError, MemoryError),
    (errno.EINVAL, shmshare.ShmValueError, ValueError),
    (errno.EBADF, shmshare.ShmOSError, OSError),
]


@pytest.mark.parametrize(("err", "cls", "builtin"), CASES)
def test_errno_table(err: int, cls: type, builtin: type) -> None:
    """Each errno becomes its class, a subclass of the builtin and of ShmshareError."""
    exc = from_errno(err, "doing something")
    assert type(exc) is cls
    assert isinstance(exc, builtin)
    assert isinstance(exc, shmshare.ShmshareError)
    assert exc.errno == err
    assert "doing something" in str(exc)


@pytest.mark.parametrize(("err", "cls", "builtin"), CASES)
def test_exceptions_pickle(err: int, cls: type, builtin: type) -> None:
    """Exceptions survive a pickle round trip with class, errno and message."""
    exc = from_errno(err, "x", filename="/some/file") if issubclass(cls, OSError) else (
        from_errno(err, "x"))
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is cls
    assert back.errno == err
    assert str(back) == str(exc)


def test_eexist_from_kernel() -> None:
    """shmget(IPC_CREAT|IPC_EXCL) on an existing key raises SegmentExistsError."""
    key = 0x00ABC123
    shmid = _core.shmget(key, 4096, _core.IPC_CREAT | _core.IPC_EXCL | 0o600)
    try:
        with pytest.raises(shmshare.SegmentExistsError) as info:
            _core.shmget(key, 4096, _core.IPC_CREAT | _core.IPC_EXCL | 0o600)
        assert info.value.errno == errno.EEXIST
    finally:
        _core.rmid(shmid)


def test_enoent_from_kernel() -> None:
    """shmget without IPC_CREAT on a missing key raises SegmentNotFoundError."""
    with pytest.raises(shmshare.SegmentNotFoundError):
        _core.shmget(0x00ABC124, 0, 0)


def test_einval_size_larger_than_existing() -> None:
    """Asking for more bytes than an existing segment has names that reason."""
    key = 0x00ABC125
    shmid = _core.shmget(key, 4096, _core.IPC_CREAT | 0o600)
    try:
        with pytest.raises(shmshare.ShmValueError, match="smaller than the"):
            _core.shmget(key, 1 << 20, _core.IPC_CREAT | 0o600)
    finally:
        _core.rmid(shmid)


def test_einval_size_over_shmmax(monkeypatch: pytest.MonkeyPatch) -> None:
    """A size over kernel.shmmax names the limit and the fix."""
    real = _core.limits()
    small = _core.Limits(**{**real._asdict(), "shmmax": 1 << 20})
    monkeypatch.setattr(_core, "limits", lambda: small)
    msg = _core.explain_shmget_error(errno.EINVAL, 0, 1 << 30, _core.IPC_CREAT)
    assert msg is not None and "kernel.shmmax" in msg and "sysctl" in msg


def test_enospc_names_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC says whether shmmni or shmall ran out, and how to raise it."""
    real = _core.limits()
    full_ids = _core.Limits(**{**real._asdict(), "shmmni": 5, "used_ids": 5})
    monkeypatch.setattr(_core, "limits", lambda: full_ids)
    msg = _core.explain_shmget_error(errno.ENOSPC, 0, 4096, _core.IPC_CREAT)
    assert msg is not None and msg.startswith("kernel.shmmni exhausted")
    full_pages = _core.Limits(**{**real._asdict(), "shmall": 10, "shm_tot": 10, "used_ids": 1})
    monkeypatch.setattr(_core, "limits", lambda: full_pages)
    msg = _core.explain_shmget_error(errno.ENOSPC, 0, 4096, _core.IPC_CREAT)
    assert msg is not None and msg.startswith("kernel.shmall exhausted")
    exc = from_errno(errno.ENOSPC, "shmget", msg)
    assert isinstance(exc, MemoryError) and "kernel.shmall exhausted" in str(exc)


def test_eidrm_on_removed_segment() -> None:
    """IPC_STAT of a removed segment raises SegmentRemovedError."""
    shmid = _core.shmget(_core.IPC_PRIVATE, 4096, _core.IPC_CREAT | 0o600)
    _core.rmid(shmid)
    with pytest.raises(shmshare.SegmentRemovedError, match="removed"):
        _core.stat(shmid)


def test_eperm_and_eacces_as_other_user() -> None:
    """Another user gets EPERM for IPC_SET and EACCES for attaching a 0600 segment."""
    import os

    if os.geteuid() != 0:
        pytest.skip("needs root to become another user")
    shmid = _core.shmget(_core.IPC_PRIVATE, 4096, _core.IPC_CREAT | 0o600)
    try:
        from helpers import fork_call

        def other_user() -> int:
            os.setresuid(54321, 54321, 54321)
            try:
                _core.set_attrs(shmid, mode=0o666)
            except shmshare.ShmPermissionError as exc:
                return 0 if exc.errno == errno.EPERM else 2
            return 3

        _core.set_attrs(shmid, mode=0o644)  # readable by all, so only IPC_SET is refused
        assert fork_call(other_user) == 0
        _core.set_attrs(shmid, mode=0o600)
        # ...and EACCES for reading without permission, from the same user.
        def no_access() -> int:
            os.setresuid(54321, 54321, 54321)
            try:
                _core.shmat(shmid, 4096)
            except shmshare.ShmPermissionError as exc:
                return 0 if exc.errno == errno.EACCES else 2
            return 3

        assert fork_call(no_access) == 0
    finally:
        _core.rmid(shmid)


CORE_CASES = [  # (C result code, class, errno kept, words of the message)
    ("SHMS_ECORRUPT", shmshare.CorruptSegmentError, "SHMS_ECORRUPT", "marked corrupt"),
    ("SHMS_ETOOMANY", shmshare.ShmLimitError, errno.ENOSPC, "its maximum"),
    ("SHMS_EEXTGONE", shmshare.SegmentRemovedError, errno.EIDRM, "extent segments"),
    ("SHMS_ENOKEY", shmshare.ShmLimitError, errno.ENOSPC, "every key this heap"),
    ("SHMS_EWRONGKIND", shmshare.WrongTypeError, "SHMS_EWRONGKIND", "another kind"),
    (errno.ETIMEDOUT, shmshare.LockTimeoutError, errno.ETIMEDOUT, "the heap lock was not"),
    (errno.ENOTRECOVERABLE, shmshare.CorruptSegmentError, errno.ENOTRECOVERABLE,
     "unrecoverable"),
    (errno.EACCES, shmshare.ShmPermissionError, errno.EACCES, "owner and mode"),
]


@pytest.mark.parametrize(("code", "cls", "kept", "words"), CORE_CASES)
def test_core_result_codes_map_through_one_table(code: int | str, cls: type,
                                                 kept: int | str, words: str) -> None:
    """A C result code of the core becomes its class, keeps an errno, says what went
    wrong, and pickles; a kernel errno falls through to the errno table."""
    from shmshare._core._lib import lib

    from shmshare._core.results import failure

    code = getattr(lib, code) if isinstance(code, str) else code
    kept = getattr(lib, kept) if isinstance(kept, str) else kept
    exc = failure(code, "doing it")
    assert type(exc) is cls and exc.errno == kept
    assert "doing it: " in str(exc) and words in str(exc)
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is cls and str(again) == str(exc) and again.errno == kept


def test_core_lock_codes_name_the_lock() -> None:
    """EDEADLK and a closed handle become the builtins callers catch, naming the lock."""
    from shmshare._core.results import ECLOSED, failure

    deadlk = failure(errno.EDEADLK, "locking", lock="the lock")
    assert type(deadlk) is RuntimeError and "already holds the lock" in str(deadlk)
    closed = failure(ECLOSED, "locking")
    assert type(closed) is ValueError and "detached" in str(closed)


def test_heap_growth_failure_names_the_limit() -> None:
    """ENOSPC while a heap grows says by how much, and which limit refused it."""
    from shmshare._core.results import failure

    exc = failure(errno.ENOSPC, "dict set", asked=1 << 20)
    assert isinstance(exc, shmshare.ShmLimitError) and exc.errno == errno.ENOSPC
    assert f"by a segment of {1 << 20} bytes failed: ENOSPC" in str(exc)
