"""The client of examples/shm_server.py: an unrelated process that finds the objects by name.

It opens ``shm_demo`` (a SharedDict) and its Condition by name — waiting for the
server to create them if it is not up yet — then, for every message, sleeps in
``wait_for`` until a new message is posted, reads it, and answers the way the C
client did (the first character replaced by '*'), all with the Condition's lock
held, and wakes the server with ``notify_all``.

Run after (or before) ``python examples/shm_server.py``, with the same
``--project-dir`` if you gave one.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path


def _load_server_module():  # type: ignore[no-untyped-def]
    """examples/shm_server.py, loaded by its path: this works under ``python -P`` too,
    where the script's directory is not on sys.path (and no other ``shm_server`` can
    be picked up instead)."""
    path = Path(__file__).resolve().with_name("shm_server.py")
    spec = importlib.util.spec_from_file_location("shm_server", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_server = _load_server_module()
END, NAME, open_objects = _server.END, _server.NAME, _server.open_objects


def open_by_name(project_dir: str | None, timeout: float):  # type: ignore[no-untyped-def]
    """Open the server's objects by name, waiting up to ``timeout`` s for them to exist."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return open_objects(project_dir, create=False)
        except FileNotFoundError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)  # the server is not up yet


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project-dir", default=None,
                    help="where the key files live (default: $SHMSHARE_DIR or the library's)")
    ap.add_argument("--timeout", type=float, default=60.0,
                    help="seconds to wait for the server and for each message (default 60)")
    args = ap.parse_args(argv)

    board, lock, cond = open_by_name(args.project_dir, args.timeout)
    answered = 0
    try:
        print(f"client: opened {NAME!r} of server pid {board['server']} by name", flush=True)
        last = -1
        while True:
            with cond:
                # Sleep until the server posts a message newer than the last one we saw.
                if not cond.wait_for(lambda last=last: board.get("message", (-1, ""))[0] > last,
                                     args.timeout):
                    print("client: the server went quiet; giving up")
                    return 1
                last, text = board["message"]
                if text is END:
                    break
                board["reply"] = (last, "*" + text[1:])  # the C client's "I read it"
                cond.notify_all()
            print(f"client: read {text!r}", flush=True)
            answered += 1
    finally:
        # Detach only: the objects belong to the server, which removes them.
        for obj in (board, cond, lock):
            obj.detach()
    print(f"client: answered {answered} messages")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
