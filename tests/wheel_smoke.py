"""Smoke test of an installed shmshare wheel: ``python tests/wheel_smoke.py``.

Run by cibuildwheel's ``test-command`` and by ``.ci/run`` on every Python it
finds, from a directory outside the checkout, so the shmshare imported is the
installed one.  It touches each layer once — the compiled core, a named and an
anonymous heap object shared with a spawned process, a robust lock whose holder
dies, the Manager and the CLI — and checks that it leaves no segment behind.
Exits non-zero (with a traceback) on any failure.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path


def _child(d: object, lock: object) -> None:
    d["child"] = os.getpid()  # type: ignore[index]
    lock.acquire()  # type: ignore[attr-defined]
    os._exit(0)  # dies holding the lock: the parent's next acquire recovers it


def _segments_of(pids: set[int]) -> list[str]:
    with open("/proc/sysvipc/shm") as f:
        next(f)
        return [line.split()[1] for line in f if int(line.split()[4]) in pids]


def main() -> int:
    import shmshare
    from shmshare._core import _lib
    from shmshare.objects.sync import SharedLock

    here = Path(shmshare.__file__).resolve()
    print(f"shmshare {shmshare.__version__} from {here.parent}")
    print(f"core: {Path(_lib.__file__).name}")
    assert ".abi3." in Path(_lib.__file__).name, "the core is not built for the stable ABI"

    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "proj"
        named = shmshare.SharedDict("smoke", {"a": 1}, project_dir=project)
        anon = shmshare.SharedDict()
        lock = SharedLock()
        ctx = mp.get_context("spawn")  # a fresh interpreter imports the wheel again
        p = ctx.Process(target=_child, args=(anon, lock))
        p.start()
        p.join(60)
        assert p.exitcode == 0, f"child exit code {p.exitcode}"
        assert anon["child"] == p.pid
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            assert lock.acquire(timeout=30), "a dead holder's lock was not recovered"
        assert any(issubclass(w.category, shmshare.OwnerDiedWarning) for w in seen)
        lock.release()
        named.apply("a", lambda v: v + 1)
        assert dict(named) == {"a": 2}

        with shmshare.Manager() as m:
            lst = m.list([1, 2])
            lst.append(3)
            assert list(lst) == [1, 2, 3]

        ls = subprocess.run([sys.executable, "-m", "shmshare", "ls", "--json",
                             "--project-dir", str(project)], capture_output=True, text=True,
                            timeout=60, check=True, cwd=tmp)
        assert [o["name"] for o in json.loads(ls.stdout)["objects"]] == ["smoke"], ls.stdout
        for obj in (named, anon, lock):
            obj.detach()
        # The per-user process table (liveness, _core/proc) stays by design.
        from shmshare._core import proc

        table = {str(i) for i in proc.table_shmids()}
        left = [sid for sid in _segments_of({os.getpid(), p.pid}) if sid not in table]
        assert not left, f"segments left behind: {left}"
    print(f"smoke test OK on Python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
