"""CPython's manager tests against shmshare.Manager, under forkserver (see conformance.py)."""

from conformance import install

install(globals(), "forkserver")
