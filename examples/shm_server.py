"""The classic shm_server / shm_client pair, done safely with shmshare.

The C version everybody copies: the server ``shmget``s key 5678, writes "a".."z"
and loops ``while (*shm != '*') sleep(1);`` until the client, which found the
segment by the same key, has overwritten the first byte with '*'.  Its problems:
a made-up key that anything else may use, a flag in the data used as a lock
(test-then-set is not atomic: two readers or two writers can both see "free"),
a poll with sleep, no way to know that the other side died, and a segment that
stays in the kernel for ever when the server is killed.

Here the server creates three *named* objects in a project directory: a SharedDict
``shm_demo`` (the data), and a Condition ``shm_demo.cond`` over an RLock
``shm_demo.lock`` (the synchronisation).  An unrelated process —
``examples/shm_client.py``, started separately — finds them by name alone.
Every read and write of the shared state happens with the Condition's lock held,
and each side sleeps in ``wait_for`` until the other has done its part and called
``notify_all``: no flag doubles as a lock, no lost update, no busy loop.  The
server removes the objects at the end, whatever happened.

Run, in two terminals:   python examples/shm_server.py
                          python examples/shm_client.py
or both from one command: python examples/shm_server.py --spawn-client
(``--project-dir DIR`` on both sides; default: $SHMSHARE_DIR, else the library's default.)
"""

from __future__ import annotations

import argparse
import os
import signal
import string
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import shmshare
from shmshare import SharedCondition, SharedRLock

NAME = "shm_demo"
MESSAGES = [string.ascii_lowercase, "hello from the server", "System V, safely",
            "no server process in shmshare itself", "bye"]
END = None  # posted as the text of the last message: "no more messages"


def open_objects(project_dir: Any, create: bool) -> tuple[shmshare.SharedDict, SharedRLock,
                                                          SharedCondition]:
    """The demo's three named objects: created (``create=True``) or opened by name.

    create=True fails if they exist (another server is running, or a killed one left
    them: ``python -m shmshare rm shm_demo``); create=False fails if they do not.
    """
    opened: list[Any] = []
    try:
        lock = SharedRLock(name=f"{NAME}.lock", create=create, project_dir=project_dir)
        opened.append(lock)
        cond = SharedCondition(lock, name=f"{NAME}.cond", create=create,
                               project_dir=project_dir)
        opened.append(cond)
        board = shmshare.SharedDict(name=NAME, create=create, project_dir=project_dir)
    except BaseException:
        for obj in opened:
            obj.detach()
        raise
    return board, lock, cond


def serve(board: shmshare.SharedDict, cond: SharedCondition, timeout: float,
          client: subprocess.Popen[bytes] | None = None) -> list[str]:
    """Post each message, wait for the client's reply to it; the replies.

    With the ``client`` we started, a client that exits early ends the wait at
    once: nobody is left to reply.  (The wait wakes each second to look, since a
    dead process cannot ``notify``.)
    """
    replies = []
    for seq, text in enumerate(MESSAGES):
        with cond:  # the state below is only ever read or written with this lock held
            board["message"] = (seq, text)
            cond.notify_all()  # wake the client if it is waiting
            # Sleep until the reply to *this* message is there (no polling of a flag).
            deadline = time.monotonic() + timeout
            while not cond.wait_for(lambda seq=seq: board.get("reply", (-1, ""))[0] == seq,
                                    1.0 if client is not None else timeout):
                if client is not None and client.poll() is not None:
                    raise RuntimeError(f"the client exited with status {client.returncode} "
                                       f"before replying to message {seq}")
                if client is None or time.monotonic() > deadline:
                    raise TimeoutError(f"no reply to message {seq} within {timeout} s: "
                                       f"is examples/shm_client.py running?")
            reply = board["reply"][1]
        print(f"server: sent {text!r}, client replied {reply!r}", flush=True)
        replies.append(reply)
    with cond:
        board["message"] = (len(MESSAGES), END)
        cond.notify_all()
    return replies


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project-dir", default=None,
                    help="where the key files live (default: $SHMSHARE_DIR or the library's)")
    ap.add_argument("--spawn-client", action="store_true",
                    help="also start examples/shm_client.py, as a separate program")
    ap.add_argument("--client", default=str(Path(__file__).with_name("shm_client.py")),
                    help="the client program --spawn-client starts (default: shm_client.py "
                         "next to this file)")
    ap.add_argument("--timeout", type=float, default=60.0,
                    help="seconds to wait for each reply (default 60)")
    args = ap.parse_args(argv)

    # `kill` (SIGTERM) would end Python without running `finally:` blocks; make it an
    # exception, so that a terminated server still removes its objects.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    board, lock, cond = open_objects(args.project_dir, create=True)
    client = None
    try:
        board["server"] = os.getpid()
        print(f"server: created {NAME!r} in {board.project_dir}", flush=True)
        if args.spawn_client:
            # An unrelated program (not a fork of this one): it only knows the name.
            # The same interpreter flags (e.g. -P), so the client runs as we do.
            flags = ["-P"] if getattr(sys.flags, "safe_path", False) else []
            cmd = [sys.executable, *flags, args.client, "--timeout", str(args.timeout)]
            if args.project_dir is not None:
                cmd += ["--project-dir", args.project_dir]
            client = subprocess.Popen(cmd)
        else:
            print("server: now start  python examples/shm_client.py", flush=True)
        try:
            replies = serve(board, cond, args.timeout, client)
        except (RuntimeError, TimeoutError) as exc:
            print(f"FAILED: {exc}")
            return 1
        if client is not None:
            client.wait(args.timeout)
    finally:
        if client is not None and client.poll() is None:
            client.kill()
            client.wait()
        # Remove the objects now, even if a client is still attached (it keeps its
        # access until it detaches) — nothing stays behind in the kernel.
        for obj in (board, cond, lock):
            obj.unlink()
            obj.detach()

    expected = ["*" + text[1:] for text in MESSAGES]
    if replies != expected or (client is not None and client.returncode != 0):
        print(f"FAILED: replies {replies}, client exit code "
              f"{None if client is None else client.returncode}")
        return 1
    print(f"OK: the client answered all {len(MESSAGES)} messages; {NAME!r} removed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
