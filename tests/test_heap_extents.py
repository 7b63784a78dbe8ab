"""The extent protocol (src/extent.c): keys derived from the main segment, so
every extent is found again -- by its heap's last user, by removal, or by gc --
whatever moment its creator died at, and no operation pays a syscall for it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import HeapFactory
from helpers import fork_child, own_ipc_namespace, segments_created_by, wait_child

from shmshare import ShmLimitError, _core
from shmshare._core.extents import set_test_fail_point
from shmshare.naming.lifecycle import sweep_extents


def _anonymous_heap_child(grow: int) -> HeapFactory:
    """In a child: be the only user of a new anonymous heap, and grow it."""
    f = HeapFactory()
    h = f(1 << 16)
    h.dict_set(b"k", 1, bytes(grow))
    return f


def _alone(scenario) -> None:  # type: ignore[no-untyped-def]
    """Run ``scenario()`` in a forked child in an IPC namespace of its own: a dead
    heap's extents are garbage that any heap reusing its main segment's index may
    reap (legitimately), and a test running beside this one may make such a heap."""
    def run() -> int:
        own_ipc_namespace()  # else (not permitted here) beside the other tests, as before
        scenario()
        return 0
    assert wait_child(fork_child(run)) == 0, "the scenario failed (its traceback is above)"


def test_extent_of_a_creator_killed_right_after_shmget_is_found_by_gc() -> None:
    """The last user dies between an extent's shmget and its header: gc still finds it."""
    def child() -> int:
        set_test_fail_point(1)      # _exit(70) right after the extent's shmget
        _anonymous_heap_child(200_000)
        return 0

    def scenario() -> None:
        pid = fork_child(child)
        assert wait_child(pid) == 70
        left = segments_created_by(pid)      # the main segment died with the child
        assert len(left) == 1
        assert _core.stat(left[0]).nattch == 0
        removed = sweep_extents(ids=left)
        assert [r.name for r in removed] == [f"extent shmid={left[0]}"]
        assert "unfinished" in removed[0].reason
        assert segments_created_by(pid) == []
    _alone(scenario)


def test_extents_of_killed_sharers_are_found_by_gc() -> None:
    """Two users of an anonymous heap, grown while shared, both die without detaching:
    gc removes the extents (a sole user's extents die with it: test_shared_dict)."""
    def child() -> int:
        f = HeapFactory()
        h = f(1 << 16)
        r, w = os.pipe()
        sharer = os.fork()
        if sharer == 0:
            os.read(r, 1)                # idle sharer of the main segment
            os._exit(0)
        h.dict_set(b"k", 1, bytes(1_000_000))
        os.write(w, b"x")
        os.waitpid(sharer, 0)
        os._exit(0 if f.made else 1)     # no detach, no cleanup

    def scenario() -> None:
        pid = fork_child(child)
        assert wait_child(pid) == 0
        left = segments_created_by(pid)
        assert left and all(_core.stat(sid).nattch == 0 for sid in left)
        assert sweep_extents(ids=left, dry_run=True)
        assert segments_created_by(pid) == left
        assert len(sweep_extents(ids=left)) == len(left)
        assert segments_created_by(pid) == []
    _alone(scenario)


def test_gc_keeps_extents_of_a_live_heap(make_heap: HeapFactory) -> None:
    """A heap still in use keeps every extent, even ones no process has attached."""
    h = make_heap(1 << 16)

    def child() -> int:
        h.dict_set(b"b", 1, bytes(500_000))
        return 0
    pid = fork_child(child)
    assert wait_child(pid) == 0
    ext = segments_created_by(pid)
    assert ext and _core.stat(ext[0]).nattch == 0   # nobody attached it yet
    assert sweep_extents(ids=ext) == []
    assert h.dict_get(b"b", 1) == bytes(500_000)


def test_last_detach_removes_every_extent() -> None:
    """Two users grow an anonymous object; when both have detached, nothing is left."""
    import shmshare

    def child() -> int:
        d = shmshare.SharedDict()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(w)
            os.read(r, 1)                # idle until the parent has grown it
            assert d["big"] == "x" * 3_000_000
            d["more"] = "y" * 6_000_000  # grows further
            d.detach()
            os._exit(0)
        os.close(r)
        d["big"] = "x" * 3_000_000
        d.detach()                       # not the last user: extents stay
        os.write(w, b"g")
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)
    pid = fork_child(child)
    assert wait_child(pid) == 0
    assert segments_created_by(pid) == []


def test_concurrent_last_detaches_remove_every_extent() -> None:
    """Four users detach at the same moment, extents grown while they shared the object:
    whichever detaches the main segment last finds it gone and removes them."""
    import shmshare

    def child() -> int:
        d = shmshare.SharedDict()
        r, w = os.pipe()
        workers = []
        for _ in range(3):
            pid = os.fork()
            if pid == 0:
                os.close(w)
                os.read(r, 1)
                d.detach()
                os._exit(0)
            workers.append(pid)
        os.close(r)
        d["big"] = "x" * 3_000_000       # shared: the extents stay keyed
        os.write(w, b"ggg")              # everyone detaches now, together
        d.detach()
        codes = [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in workers]
        return max(codes)
    for _ in range(5):
        pid = fork_child(child)
        assert wait_child(pid) == 0
        assert segments_created_by(pid) == []


SYSCALLS = textwrap.dedent("""
    import os, shmshare
    d = shmshare.SharedDict()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                         # attached to the main segment only, idle
        os.close(w); os.read(r, 1); os._exit(0)
    os.close(r)
    d.update((i, "x" * 100) for i in range(20000))   # grows into extents
    assert d.stats()["extents"] >= 3
    os.access("/shmshare-mark-begin", os.F_OK)
    for i in range(2000):
        d[i % 500] = i
        d.get(i % 700)
    os.access("/shmshare-mark-end", os.F_OK)
    os.write(w, b"x"); os.waitpid(pid, 0)
    d.detach()
""")


def test_uncontended_operations_make_no_shm_syscall(tmp_path: Path) -> None:
    """4000 operations on an anonymous dict shared with an idle process: 0 shm* syscalls."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed: it is what counts the syscalls")
    out = tmp_path / "trace"
    proc = subprocess.run(
        [strace, "-f", "-o", str(out), "-e", "trace=access,faccessat,faccessat2,shmget,"
         "shmat,shmdt,shmctl", sys.executable, "-c", SYSCALLS],
        capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 and "ptrace" in proc.stderr:
        pytest.skip(f"strace cannot trace here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr
    lines = out.read_text().splitlines()
    begin = next(i for i, ln in enumerate(lines) if "shmshare-mark-begin" in ln)
    end = next(i for i, ln in enumerate(lines) if "shmshare-mark-end" in ln)
    calls = [ln for ln in lines[begin:end] if re.search(r"\bshm(get|at|dt|ctl)\(", ln)]
    assert calls == [], f"{len(calls)} shm syscalls, e.g. {calls[:3]}"
    assert any("shmget(" in ln for ln in lines[:begin])   # the trace does see them


SHMALL = textwrap.dedent("""
    import sys
    from shmshare import _core
    from shmshare._core.heap import Heap
    from shmshare.errors import ShmLimitError
    with open("/proc/sys/kernel/shmall", "w") as f:
        f.write("2048")                  # 8 MiB in this IPC namespace only
    sid = _core.shmget(_core.IPC_PRIVATE, (1 << 20) + 4096, _core.IPC_CREAT | 0o600)
    att = _core.shmat(sid, (1 << 20) + 4096)
    _core.rmid(sid)
    h = Heap.create(att, 4096, 1 << 20)
    sizes = []
    try:
        for i in range(1000):
            k = b"%04d" % i
            h.dict_set(k, len(k), bytes(100_000))
            sizes.append(h.stats()["bytes_total"])
    except ShmLimitError as exc:
        print("ERROR", exc)
    print("ITEMS", len(sizes), "EXTENTS", h.stats()["extents"])
    h.destroy_extents(); h.close(); att.detach()
""")


def test_growth_retries_smaller_when_shmall_refuses_the_doubling() -> None:
    """Under kernel.shmall, growth falls back to smaller extents and then reports real numbers."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare is not installed: the test needs its own IPC namespace")
    probe = subprocess.run([unshare, "--ipc", "--map-root-user", "sh", "-c",
                            "echo 4096 > /proc/sys/kernel/shmall"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"cannot set kernel.shmall in a new IPC namespace: {probe.stderr.strip()}")
    proc = subprocess.run([unshare, "--ipc", "--map-root-user", sys.executable, "-c", SHMALL],
                          capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).parent)
    assert proc.returncode == 0, proc.stderr
    items = int(re.search(r"ITEMS (\d+)", proc.stdout).group(1))  # type: ignore[union-attr]
    # 8 MiB of pages: 1 MiB main + 1 + 2 MiB extents, then the 4 MiB doubling does not
    # fit in what is left, but smaller extents do: more than 40 items of 100 kB.
    assert items > 60, proc.stdout
    error = re.search(r"ERROR (.*)", proc.stdout)
    assert error is not None, proc.stdout
    message = error.group(1)
    assert "kernel.shmall exhausted" in message, message
    asked = int(re.search(r"and (\d+) more were asked for", message).group(1))  # type: ignore[union-attr]
    assert asked > 0, message
    assert re.search(r"a segment of [1-9]\d* bytes", message), message




def test_segments_squatting_on_a_heaps_keys_are_left_alone(make_heap: HeapFactory) -> None:
    """Other segments under every key of slot 1: growth fails clearly, nobody removes them."""
    h = make_heap(1 << 16)
    main = make_heap.made[-1][1].shmid
    planted = []
    try:
        for try_ in range(8):
            key = (main & 0x7FFF) << 9 | 1 << 3 | try_
            sid = _core.shmget(key, 4096, _core.IPC_CREAT | _core.IPC_EXCL | 0o600)
            planted.append(sid)
            att = _core.shmat(sid, 4096)
            att.memoryview()[:8] = b"PLANTED!"
            att.detach()
        with pytest.raises(ShmLimitError, match="every key this heap may give"):
            h.dict_set(b"big", 3, bytes(200_000))
        assert sweep_extents(ids=planted) == []
        h.destroy_extents()
        assert all(_core.stat(sid).nattch == 0 for sid in planted)   # still there
    finally:
        for sid in planted:
            _core.rmid(sid)


_REMOVER_KILLED = """
import os, sys
import shmshare
from shmshare.naming import lifecycle
d = shmshare.SharedDict("grown", project_dir=sys.argv[1])
for i in range(4):
    d[i] = os.urandom(300_000)          # the heap grows into extents
hooks = list(lifecycle._DESTROY_HOOKS)

def killed_after_hooks(*args):
    for hook in hooks:
        hook(*args)                      # the extents go...
    os._exit(0)                          # ...and the remover dies there

lifecycle._DESTROY_HOOKS[:] = [killed_after_hooks]
print(d._seg.id, os.getpid(), flush=True)
shmshare.unlink(d)
"""


def test_a_remover_killed_between_the_extents_and_the_segment(project_dir: Path) -> None:
    """unlink() killed right after the destroy hooks removed the heap's extents: the
    name opens (a new object) or the old one is whole, never a heap missing its
    extents (SegmentRemovedError), and gc leaves nothing."""
    from helpers import run_python

    import shmshare

    out = run_python(_REMOVER_KILLED, str(project_dir))
    old, remover = map(int, out.stdout.split())
    d = shmshare.SharedDict("grown", project_dir=project_dir)
    if d._seg.id == old:  # the old object survived: then all of it
        assert sorted(d) == [0, 1, 2, 3] and all(len(d[i]) == 300_000 for i in range(4))
    else:
        with pytest.raises(shmshare.SegmentRemovedError):
            _core.stat(old)
    d["x"] = 1
    shmshare.unlink(d)
    swept = subprocess.run([sys.executable, "-m", "shmshare", "gc", "--project-dir",
                            str(project_dir)], capture_output=True, text=True, timeout=60,
                           cwd="/")
    assert swept.returncode == 0, swept.stderr
    assert segments_created_by(remover) == [], swept.stdout  # its extents too


@pytest.mark.parametrize("crowd", [0, 520])
def test_removal_finds_every_extent_however_many_segments_exist(project_dir: Path,
                                                                crowd: int) -> None:
    """Removing a grown heap finds its extents by walking the kernel's table of
    segments when that holds fewer than the heap's 504 keys, else by probing the
    keys (src/extent_removal.c): either way every extent goes."""
    import shmshare
    from shmshare._core.extents import extent_candidates

    filler = []
    try:
        for _ in range(crowd):  # more segments than keys: the probing path
            filler.append(_core.shmget(_core.IPC_PRIVATE, 4096, _core.IPC_CREAT | 0o600))
        d = shmshare.SharedDict("grown", create=True, project_dir=project_dir)
        for i in range(3):
            d[f"big{i}"] = bytes(400_000 << i)
        extents = extent_candidates(d._heap._att.shmid)
        assert len(extents) >= 2, extents
        d.unlink()
        d.detach()
        left = []
        for sid in extents:
            try:
                _core.stat(sid)
                left.append(sid)
            except OSError:
                pass
        assert left == []
    finally:
        for sid in filler:
            _core.rmid(sid)



WALKS = textwrap.dedent("""
    import os, sys, shmshare
    d = shmshare.SharedDict("walk", create=True, project_dir=sys.argv[1])
    if sys.argv[2] == "grown":
        d["big"] = bytes(400_000)        # one extent at least
    os.access("/shmshare-mark-unlink", os.F_OK)
    d.unlink()
    os.access("/shmshare-mark-detach", os.F_OK)
    d.detach()
    os.access("/shmshare-mark-end", os.F_OK)
""")


@pytest.mark.parametrize("grown", [False, True])
def test_removal_walks_the_segment_table_only_for_a_heap_that_grew(tmp_path: Path,
                                                                   grown: bool) -> None:
    """unlink() by the only user, and the last detach after it, look for a grown
    heap's extents by walking the kernel's table (a syscall per segment on the
    machine); a heap whose header counts no extent has none to find (each slot is
    counted before its shmget), and neither walks."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed: it is what counts the syscalls")
    out = tmp_path / "trace"
    proc = subprocess.run(
        [strace, "-f", "-o", str(out), "-e", "trace=access,faccessat,faccessat2,shmctl",
         sys.executable, "-c", WALKS, str(tmp_path), "grown" if grown else "fresh"],
        capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 and "ptrace" in proc.stderr:
        pytest.skip(f"strace cannot trace here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr
    lines = out.read_text().splitlines()
    at = [next(i for i, ln in enumerate(lines) if f"shmshare-mark-{m}" in ln)
          for m in ("unlink", "detach", "end")]
    for step, (begin, end) in (("unlink", at[:2]), ("detach", at[1:])):
        walk = [ln for ln in lines[begin:end] if "SHM_INFO" in ln or "SHM_STAT_ANY" in ln]
        assert bool(walk) == grown, (step, walk[:3])
    assert any("IPC_RMID" in ln for ln in lines[at[0]:at[1]])


def test_a_last_detacher_that_saw_no_extent_still_reaps_one_grown_since() -> None:
    """The last detach skips the walk when the header counted no extent right before
    its shmdt, unless a segment is under slot 1's keys: an extent grown in between
    (by a process attached beside it) is in slot 1 first.  Here the heap grew and
    its main segment went without anyone reaping, as if so: the probe finds it."""
    from shmshare._core.extents import extent_candidates, reap_after_detach
    from shmshare._core.heap import Heap

    def scenario() -> None:
        total = (1 << 16) + 4096
        sid = _core.shmget(_core.IPC_PRIVATE, total, _core.IPC_CREAT | 0o600)
        att = _core.shmat(sid, total)
        h = Heap.create(att, 4096, 1 << 16)
        h.dict_set(b"k", 1, bytes(200_000))     # an extent: slot 1, under a key
        extents = extent_candidates(sid)
        assert extents
        h.close()
        att.detach()                              # the main is still there: no reap
        assert [_core.stat(e).nattch for e in extents] == [0] * len(extents)
        _core.rmid(sid)                           # gone, its extents left behind
        assert reap_after_detach(sid, fresh=True) == len(extents)
        assert segments_created_by(os.getpid()) == []
        assert reap_after_detach(sid, fresh=True) == 0   # nothing under the keys now
    _alone(scenario)


GROW_BY_SHMID = textwrap.dedent("""
    import pickle, sys
    d = pickle.loads(bytes.fromhex(sys.stdin.read()))   # attached by shmid
    d["big"] = bytes(400_000)                            # grows it
    d.detach()                                           # not the last: no reap
""")


def test_extents_grown_by_a_process_attached_by_shmid_go_with_the_last_detach() -> None:
    """An anonymous heap (removed from the start, reached by shmid only) that a
    receiver grows and leaves: the last detach, whose header then counts the
    extents, removes them."""
    import pickle

    import shmshare

    d = shmshare.SharedDict()
    try:
        d["x"] = 1
        proc = subprocess.Popen([sys.executable, "-c", GROW_BY_SHMID], stdin=subprocess.PIPE,
                                text=True, cwd="/")
        proc.communicate(pickle.dumps(d).hex(), timeout=60)
        assert proc.returncode == 0
        assert d["big"] == bytes(400_000) and d.stats()["extents"] >= 2
        assert segments_created_by(proc.pid)          # its extents live while d does
    finally:
        d.detach()
    assert segments_created_by(proc.pid) == []
