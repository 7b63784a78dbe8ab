"""CPython's manager tests against shmshare.Manager(url=...) on a real redis-server, under
fork (see conformance.py; the tests specific to shared memory skip with their reason)."""

import pytest
from conformance import install

pytest.importorskip("redis", reason="redis-py is not installed (pip install shmshare[redis])")

install(globals(), "fork", redis=True)
