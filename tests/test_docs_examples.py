"""Every fenced ``python`` block of README.md and docs/ runs, as a reader would run it.

The blocks of one page run in order, each as a script in a fresh interpreter, in
one project directory of the test's own (so "another program, started later"
finds what the block before it made).  A block must exit 0.  An HTML comment on
the line just before the fence changes that, and the few that cannot run say why:

* ``<!-- docs-test: skip REASON -->``: not run (REASON is required);
* ``<!-- docs-test: killed -->``: the block kills itself with SIGKILL on purpose;
* ``<!-- docs-test: redis -->``: the block runs with ``$SHMSHARE_URL`` naming a real
  redis-server started for the page (skipped, saying why, where there is none).

Whatever the blocks leave behind (segments, key files) is removed afterwards by
``test_examples.collect_leftovers``; leaving named objects is what several of them are
about, so it is not a failure here.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis_server import redis_server  # noqa: F401  (a fixture, for "redis" blocks)
from test_examples import ROOT, TIMEOUT, collect_leftovers, isolated_env

_FENCE = re.compile(r"^```(?P<lang>\w*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
_MARK = re.compile(r"<!--\s*docs-test:\s*(?P<what>skip|killed|redis)\b(?P<why>[^>]*?)-->\s*$")


@dataclass
class Block:
    page: str
    line: int
    code: str
    mark: str  # "", "skip", "killed" or "redis"
    reason: str


def blocks_of(path: Path) -> list[Block]:
    text = path.read_text()
    page = str(path.relative_to(ROOT))
    found = []
    for m in _FENCE.finditer(text):
        if m.group("lang") not in ("python", "py"):
            continue
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = _MARK.search(before)
        found.append(Block(page, text.count("\n", 0, m.start()) + 1, m.group("body"),
                           mark.group("what") if mark else "",
                           mark.group("why").strip() if mark else ""))
    return found


def pages() -> list[Path]:
    """The pages with python blocks."""
    return [p for p in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
            if blocks_of(p)]


def test_marks_are_well_formed() -> None:
    """Every skip gives its reason."""
    for page in pages():
        for b in blocks_of(page):
            assert b.mark != "skip" or b.reason, f"{b.page}:{b.line}: skip without a reason"


def test_most_blocks_run() -> None:
    """Skipping is for the few blocks that cannot run, not a way to silence failures."""
    every = [b for p in pages() for b in blocks_of(p)]
    skipped = [f"{b.page}:{b.line}" for b in every if b.mark == "skip"]
    assert len(every) >= 20 and len(skipped) <= len(every) // 5, skipped


RUNNABLE = [p for p in pages() if any(b.mark != "skip" for b in blocks_of(p))]


@pytest.mark.parametrize("page", RUNNABLE, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_blocks_run(page: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The page's python blocks run in order, each exiting 0 (or as its mark says)."""
    scripts = [(b, b.code) for b in blocks_of(page) if b.mark != "skip"]
    env, project_dir, tmpdir, pid_dir = isolated_env(tmp_path)
    if any(b.mark == "redis" for b, _ in scripts):
        server = request.getfixturevalue("redis_server")  # skips without redis-server
        redis_env = {**env, "SHMSHARE_URL": server.unix_url}
    try:
        for n, (b, code) in enumerate(scripts):
            script = tmp_path / f"block{n}_line{b.line}.py"
            script.write_text(code)
            proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path,
                                  env=redis_env if b.mark == "redis" else env,
                                  capture_output=True, text=True, timeout=TIMEOUT,
                                  stdin=subprocess.DEVNULL)
            expected = -signal.SIGKILL if b.mark == "killed" else 0
            assert proc.returncode == expected, (
                f"{b.page}:{b.line} exited {proc.returncode}, not {expected}\n--- code\n"
                f"{code}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    finally:
        collect_leftovers(project_dir, tmpdir, pid_dir)
