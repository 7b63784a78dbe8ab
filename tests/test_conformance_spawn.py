"""CPython's manager tests against shmshare.Manager, under spawn (see conformance.py)."""

from conformance import install

install(globals(), "spawn")
