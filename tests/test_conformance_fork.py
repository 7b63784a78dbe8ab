"""CPython's manager tests against shmshare.Manager, under fork (see conformance.py)."""

from conformance import install

install(globals(), "fork")
