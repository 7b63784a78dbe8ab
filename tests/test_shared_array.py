"""SharedArray: dtypes and shapes, zero-copy across processes, view lifetime, lock, no numpy."""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import pickle
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import JOIN_TIMEOUT, START_METHODS, fork_call, run_python

import shmshare
from shmshare import SharedArray

ALARM = np.dtype([("alarm_flag", "i4"), ("alarm_type", "i4"), ("alarm_code", "i4"),
                  ("alarm_level", "i4"), ("alarm_index", "i4")])  # seed 004's alarm_io_t
NESTED = np.dtype([("id", "u8"), ("pos", [("x", "f4"), ("y", "f4")]), ("tag", "S3")])


@pytest.mark.parametrize("dtype", ["int8", "uint64", "float32", "float64", "complex128",
                                   "bool", "datetime64[ns]", "U5", ALARM, NESTED,
                                   np.dtype([("a", "i1"), ("b", "f8")], align=True)])
@pytest.mark.parametrize("shape", [(), (0, 3), (7,), (3, 5, 2)])
def test_dtypes_and_shapes(dtype: object, shape: tuple[int, ...]) -> None:
    """Any dtype and shape: zero-copy, page-aligned, C-contiguous, reopened identically."""
    a = SharedArray(shape, dtype)
    view = a.numpy()
    assert view.shape == shape and view.dtype == np.dtype(dtype)
    assert view.flags.c_contiguous and view.ctypes.data % 4096 == 0
    b = pickle.loads(pickle.dumps(a))
    assert b.numpy().dtype == view.dtype and b.shape == shape
    if view.size:
        view.reshape(-1)[-1] = np.ones(1, dtype=view.dtype)[0] if view.dtype.names is None \
            else np.zeros(1, dtype=view.dtype)[0]
        assert b.numpy().reshape(-1)[-1] == view.reshape(-1)[-1]
    del view
    b.detach()
    a.detach()


def test_named_attach_from_subprocess(project_dir: Path) -> None:
    """An unrelated process opens the array by name: shape and dtype come from the header."""
    a = SharedArray(4, ALARM, name="alarms", project_dir=project_dir)
    a.numpy()["alarm_code"] = [0x11, 0x12, 0x13, 0x14]
    code = textwrap.dedent("""
        import sys
        from shmshare import SharedArray
        with SharedArray(name="alarms", project_dir=sys.argv[1]) as a:
            rec = a.numpy()
            assert rec.shape == (4,) and rec.dtype.names[2] == "alarm_code"
            rec["alarm_flag"] = rec["alarm_code"] + 1
            del rec  # views must be gone before the detach at the end of the block
    """)
    run_python(code, str(project_dir))
    assert list(a.numpy()["alarm_flag"]) == [0x12, 0x13, 0x14, 0x15]
    with pytest.raises(ValueError, match="has shape"):
        SharedArray((5,), ALARM, name="alarms", project_dir=project_dir)
    with pytest.raises(ValueError, match="has dtype"):
        SharedArray((4,), "float64", name="alarms", project_dir=project_dir)
    with pytest.raises(TypeError, match="is a array, not a dict"):
        shmshare.SharedDict("alarms", project_dir=project_dir)
    a.detach()


def _fill(a: SharedArray, lo: int, hi: int) -> None:
    a.numpy()[lo:hi] = np.arange(lo, hi)  # disjoint slices: no lock needed


def _total(a: SharedArray) -> float:
    return float(np.asarray(a).sum())


@pytest.mark.parametrize("method", START_METHODS)
def test_processes_and_pool(method: str) -> None:
    """Process and Pool of each start method write and read the same memory."""
    a = SharedArray(1000, "int64")
    assert len(pickle.dumps(a)) < 1024
    ctx = mp.get_context(method)
    procs = [ctx.Process(target=_fill, args=(a, i * 250, (i + 1) * 250)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(JOIN_TIMEOUT)
        assert p.exitcode == 0
    with ctx.Pool(2) as pool:
        assert pool.map(_total, [a, a]) == [float(sum(range(1000)))] * 2
    a.detach()


def test_view_lifetime() -> None:
    """detach() with a live view raises BufferError; dropping the object keeps views valid."""
    a = SharedArray((10,), "float64")
    v = a.numpy()
    with pytest.raises(BufferError):
        a.detach()
    del a
    gc.collect()
    v[:] = 3.0  # the mapping outlives the SharedArray object, not the other way round
    assert v.sum() == 30.0
    del v
    gc.collect()


def test_own_view_is_kept_and_never_used_after_detach(tmp_path: Path) -> None:
    """a[i] goes through one view the object keeps; detach() drops it (no BufferError
    from the object's own view), and afterwards every access fails cleanly."""
    a = SharedArray((4, 2), "int64")
    assert repr(a) == "<SharedArray shape=(4, 2) dtype='<i8'>"
    a[1, 1] = 7
    assert a[1, 1] == 7 and a[1].tolist() == [0, 7]
    mine = a.numpy()
    mine.shape = (8,)  # reshaping a view we were given leaves the object's own alone
    assert a.shape == (4, 2) and a[1, 1] == 7 and mine[3] == 7
    del mine
    a.detach()  # the object's cached view does not count as a view in use
    for touch in (lambda: a[0], lambda: a.__setitem__(0, 1), a.numpy):
        with pytest.raises(ValueError, match="detached"):
            touch()
    b = SharedArray((3,), "float64")
    b[0] = 1.5
    shmshare.detach(b)  # the module function drops it too
    with pytest.raises(ValueError, match="detached"):
        b[0]
    with shmshare.Manager(project_dir=tmp_path) as m:
        t = m.Array("i", [1, 2, 3])
        t[1] = 5
        assert t[1] == 5 and t[:] == [1, 5, 3]
        shmshare.detach(t)
        with pytest.raises(ValueError, match="detached"):
            t[0]


def test_items_in_c_keep_every_rule_of_the_python_path(tmp_path: Path) -> None:
    """a[i] and a[i] = v go to the cached view in C (ViewItems): the view's own
    errors come back, slices and the first access take the Python path, item
    deletion is refused, and a Manager().Array still converts as multiprocessing's
    does ('u' items are str, values go through the typecode)."""
    a = SharedArray((2, 3), "int64")
    try:
        assert a[1, 2] == 0  # a tuple index before any view exists
        a[np.int64(1), 2] = 9
        assert a[1][2] == 9 and a[-1, -1] == 9 and a[:, 2].tolist() == [0, 9]
        with pytest.raises(IndexError):
            a[2]
        with pytest.raises(IndexError):
            a[0, 3] = 1
        with pytest.raises((TypeError, IndexError)):
            a["x"]
        with pytest.raises(TypeError, match="doesn't support item deletion"):
            del a[0]
    finally:
        a.detach()
    with shmshare.Manager(project_dir=tmp_path) as m:
        t, u = m.Array("i", [1, 2, 3]), m.Array("u", "ab")
        t[0] = True
        assert t[0] == 1 and type(t[0]) is int and u[1] == "b" and type(u[1]) is str
        with pytest.raises(TypeError):
            t[1] = 1.5  # converted by the typecode, as multiprocessing.Array refuses it
        u[0] = "z"
        assert u[:] == "zb" and t[:] == [1, 2, 3]
        with pytest.raises(IndexError):
            t[3]


def test_lock_and_dead_owner() -> None:
    """sa.lock serialises whole-array updates; a holder killed is reported."""
    a = SharedArray(3, "int64")

    def die_holding() -> int:
        a.lock.acquire()
        os._exit(0)

    assert fork_call(die_holding) == 0
    with pytest.warns(shmshare.OwnerDiedWarning), a.lock:
        np.asarray(a)[:] += 1
    assert list(a.numpy()) == [1, 1, 1]
    assert a.get_lock() is a.lock
    a.detach()


def test_memoryview_without_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without numpy, a struct-format dtype gives a typed memoryview."""
    import shmshare.objects.array as sa_mod

    monkeypatch.setattr(sa_mod, "_np", lambda: None)
    a = SharedArray((2, 3), "d")
    mv = a.memoryview()
    assert mv.format == "d" and mv.shape == (2, 3)
    mv[1, 2] = 4.5
    assert a[1, 2] == 4.5
    mv.release()
    with pytest.raises(ImportError):
        a.numpy()
    a.detach()


def test_manager_array_matches(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Manager().Array: len, indexing, assignment as multiprocessing's ArrayProxy."""
    with shmshare.Manager(project_dir=tmp_path) as m, mp.Manager() as theirs:
        ours, ref = m.Array("i", [1, 2, 3]), theirs.Array("i", [1, 2, 3])
        assert len(ours) == len(ref) == 3
        ours[0] = ref[0] = 7
        assert ours[0] == ref[0] == 7 and list(ours[:]) == list(ref[:])
        with pytest.raises(IndexError):
            ours[5]
        with pytest.raises(IndexError):
            ref[5]
        assert list(m.Array("d", 4)[:]) == [0.0] * 4
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with ours.get_lock():
                ours.get_obj()[1] += 1
        assert ours[1] == 3


@pytest.mark.parametrize("method", START_METHODS)
def test_process_pool_executor(method: str) -> None:
    """ProcessPoolExecutor of each start method receives the array by reference."""
    import concurrent.futures as cf

    a = SharedArray(100, "float64")
    a.numpy()[:] = 2.0
    with cf.ProcessPoolExecutor(2, mp_context=mp.get_context(method)) as ex:
        assert list(ex.map(_total, [a, a])) == [200.0, 200.0]
    a.detach()


def test_large_slices_are_populated_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A slice of at least 1 MiB is mapped in one madvise per 2 MiB chunk, once per
    attachment; small slices, repeated slices and reversed ones read and write the
    same data as numpy does."""
    from shmshare import _core

    calls: list[tuple[int, int]] = []
    real = _core.Attachment.populate

    def counting(self: _core.Attachment, offset: int, length: int) -> None:
        calls.append((offset, length))
        real(self, offset, length)

    monkeypatch.setattr(_core.Attachment, "populate", counting)
    rows, cols = 1024, 1024  # 8 MiB of float64, 8 KiB a row
    a = SharedArray((rows, cols), "float64")
    ref = np.arange(rows * cols, dtype="float64").reshape(rows, cols)
    a[0:rows] = ref  # one populate of the whole array
    assert len(calls) == 1 and calls[0][1] == rows * cols * 8
    assert (a[0:rows] == ref).all() and len(calls) == 1  # each chunk once
    assert (a[10:20] == ref[10:20]).all() and len(calls) == 1  # small: never
    assert (a[::-3] == ref[::-3]).all()
    b = pickle.loads(pickle.dumps(a))  # another attachment: populated anew
    assert (b[100:400] == ref[100:400]).all() and len(calls) == 2
    assert calls[1] == (calls[0][0] + 100 * cols * 8, 300 * cols * 8)  # just those rows
    with pytest.raises(ValueError, match="outside"):
        a._seg._attachment().populate(0, 1 << 40)
    b.detach()
    a.detach()


def test_an_array_where_a_shape_or_dtype_goes_says_how_to_copy_it_in(
        project_dir: Path) -> None:
    """SharedArray(arr) and SharedArray("name", arr) are shape/dtype errors that say how
    to share an existing array; a misspelt dtype names itself; nothing is created."""
    arr = np.zeros(4)
    hint = r"s = SharedArray\(a.shape, a.dtype, name=...\); s\[...\] = a"
    for args in ((arr,), ("frames", arr), ((4,), arr)):
        with pytest.raises(shmshare.ShmTypeError, match=hint):
            SharedArray(*args, project_dir=project_dir)
    with pytest.raises(TypeError, match=r"dtype must be a numpy dtype or its name .*'floot64'$"):
        SharedArray((4,), "floot64", name="frames", project_dir=project_dir)
    assert not project_dir.exists() or not list(project_dir.glob("*.key"))
