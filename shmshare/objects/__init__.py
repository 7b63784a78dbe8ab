"""The shared objects: one base (identity, naming, lifecycle, pickling by reference)
and the containers and synchronisation primitives built on it."""
