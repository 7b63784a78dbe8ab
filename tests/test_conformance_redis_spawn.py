"""CPython's manager tests against shmshare.Manager(url=...) on a real redis-server, under
spawn: every object the tests send a child is pickled by reference (see conformance.py)."""

import pytest
from conformance import install

pytest.importorskip("redis", reason="redis-py is not installed (pip install shmshare[redis])")

install(globals(), "spawn", redis=True)
