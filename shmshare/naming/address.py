"""How a segment travels in a pickle: ``address_of`` a Binding, and ``attach_address``
back in the receiver (by name, or by id and token; claimed, so that the sender's
pin goes: :mod:`.handoff`)."""

from __future__ import annotations

from .. import _core
from ..errors import (
    ObjectGoneError,
    SegmentNotFoundError,
    SegmentRemovedError,
    ShmPermissionError,
    ShmshareError,
    ShmValueError,
)
from .attach import Address, Binding, open_named
from .handoff import add_claim, drop_claimed
from .header import HEADER_SIZE, Header
from .keys import KeyFile, key_file_path
from .lifecycle import verified
from .mapped import MAPPED, live_attachment
from .project_dir import resolve_project_dir

__all__ = ["address_of", "attach_address"]


def address_of(b: Binding) -> Address:
    """The address that :func:`attach_address` turns back into an attachment."""
    if b.key_path is not None:
        return ("named", b.kind, b.name, str(b.project_dir))
    if b.header is not None:
        return ("anonymous", b.kind, b.shmid, b.header.token)
    return ("raw", b.shmid)


def attach_address(address: Address, *, claim: bool = False) -> Binding:
    """Attach the segment at ``address``: by name, or by id and token.

    ``claim``: this attach receives a pickle (unpickling): count it in the
    segment's claims word, so that the sender's pin goes (naming.handoff),
    and say ObjectGoneError -- never an OSError -- if the object is gone.
    """
    how = address[0]
    if how == "named":
        _, kind, name, project_dir = address
        reused = _reuse_named(kind, name, project_dir, claim)
        if reused is not None:
            return reused
        try:
            b = open_named(kind, name, 0, create=False, project_dir=project_dir,
                           persist=False, mode=0o600)
        except SegmentNotFoundError:
            if not claim:
                raise
            raise _gone(f"{kind} {name!r} in {project_dir!r}") from None
        if claim:
            _claim(b.attachment)
        return b
    if how == "anonymous":
        _, kind, shmid, token = address
        return _reattach_anonymous(kind, shmid, token, claim)
    if how == "raw":
        st = _core.stat(address[1])
        att = _core.shmat(address[1], st.size)
        return Binding(kind="raw", shmid=address[1], key=st.key, attachment=att, offset=0,
                       size=st.size)
    raise ShmValueError(f"not a segment address: {address!r}")


def _claim(att: _core.Attachment) -> None:
    add_claim(att)
    drop_claimed()


def _gone(what: str) -> ObjectGoneError:
    return ObjectGoneError(
        f"{what} was gone before this process received it: every process that used it, "
        "its sender too, had detached or exited (a multiprocessing child waits only "
        "briefly at exit for its receivers). Keep it alive in the sender until the "
        "receiver has it, give it a name with persist=True, or make it with a "
        "shmshare.Manager(), whose objects live until shutdown()")


def _reuse_named(kind: str, name: str, project_dir: str, claim: bool) -> Binding | None:
    """A binding sharing this process's live attachment of the segment ``name`` names
    now (checked under its key-file lock, as an open by name would); else None."""
    if not MAPPED:
        return None
    try:
        pdir = resolve_project_dir(project_dir)
        path = key_file_path(pdir, name)
        with KeyFile.locked(path, create=False) as kf:
            record = kf.read() if kf is not None else None
            if kf is None or record is None or record.other_namespace():
                return None
            try:
                live = live_attachment(_core.shmget(kf.key(record.proj_id), 0, 0))
            except SegmentNotFoundError:
                return None
            if live is None:
                return None
            att, _pin = live  # (the pin lives to the end: until the binding is a user)
            found = verified(att, _core.stat(att.shmid), kf.key(record.proj_id), name, kf)
            if found is None or found.header.kind != kind:
                return None
            if claim:
                add_claim(att)
            b = Binding.of_found(found, name, pdir, path)
    except ShmshareError:
        return None  # the general path says what is wrong
    if claim:
        drop_claimed()
    return b


def _reuse(shmid: int, token: int, claim: bool) -> Binding | None:
    """A binding sharing this process's live attachment of ``shmid``, if that is the
    anonymous segment ``token`` names (the token is its creation stamp); else None.

    A fork Pool's workers hold the arrays their parent held when forking: a task
    receiving one then maps nothing anew (no shmat, no page faults again)."""
    live = live_attachment(shmid)
    if live is None:
        return None
    att, _pin = live  # (the pin lives to the end: until the binding is a user)
    view = att.memoryview()
    try:
        header = Header.read(view)
    finally:
        view.release()
    if header is None or not header.anonymous or header.token != token:
        return None
    if claim:
        add_claim(att)
        drop_claimed()
    return Binding(kind=header.kind, shmid=shmid, key=0, attachment=att, offset=HEADER_SIZE,
                   size=header.payload_size, header=header)


def _reattach_anonymous(kind: str, shmid: int, token: int, claim: bool) -> Binding:
    """Attach an anonymous segment by id and verify its token (and claim it)."""
    reused = _reuse(shmid, token, claim)
    if reused is not None:
        return reused
    try:
        st = _core.stat(shmid)
        att = _core.shmat(shmid, st.size)
    except (SegmentRemovedError, ShmValueError, ShmPermissionError):
        # EIDRM; EINVAL: no such id; EACCES: the id now names another user's segment
        raise _gone(f"anonymous {kind} (shmid={shmid})") from None
    view = att.memoryview()
    try:
        header = Header.read(view)
        ours = header is not None and header.token == token and header.anonymous
    finally:
        view.release()
    if ours and claim:
        add_claim(att)
    if header is None or not ours:
        att.detach()
        raise _gone(f"anonymous {kind} (shmid={shmid}, an id that now names another segment)")
    if claim:
        drop_claimed()
    return Binding(kind=header.kind, shmid=shmid, key=0, attachment=att, offset=HEADER_SIZE,
                   size=header.payload_size, header=header)
