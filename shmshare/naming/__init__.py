"""Naming and lifecycle: project directories, key files, segment headers, and the
rules that find, sweep, list and remove named segments (below ``Segment``)."""
