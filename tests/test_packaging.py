"""What is installed is what a packager would ship: metadata, wheel tag and contents.

These read the *installed* distribution (``importlib.metadata``), so under
``.ci/run`` — which installs the built wheel into a fresh virtualenv — they check
the wheel itself.  Under an editable install the wheel-only checks skip, saying so.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from importlib import metadata
from pathlib import Path
from types import ModuleType

import pytest

import shmshare

ROOT = Path(__file__).resolve().parent.parent


def _installed() -> metadata.Distribution:
    # A checkout's own shmshare.egg-info (left by setup.py) can come first on
    # sys.path; the installed distribution is the one pip wrote a RECORD for.
    dists = [d for d in metadata.distributions(name="shmshare") if d.read_text("RECORD")]
    assert dists, "shmshare is not installed (pip install -e '.[test]')"
    return dists[0]


DIST = _installed()


def _editable() -> bool:
    text = DIST.read_text("direct_url.json")
    return bool(text) and bool(json.loads(text).get("dir_info", {}).get("editable"))


wheel_only = pytest.mark.skipif(
    _editable(), reason="shmshare is an editable install here; these check a built wheel "
    "(.ci/run installs one)")


def test_metadata_classifiers_and_urls() -> None:
    """Classifiers name Python 3.10-3.13, pytest and a development status; URLs are set."""
    meta = DIST.metadata
    classifiers = set(meta.get_all("Classifier") or [])
    for version in ("3.10", "3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {version}" in classifiers
    assert "Framework :: Pytest" in classifiers
    assert any(c.startswith("Development Status :: ") for c in classifiers)
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL") or [])
    assert {"Homepage", "Documentation", "Source", "Issues"} <= set(urls)
    assert meta["Requires-Python"] == ">=3.10"


def test_extras_keep_test_apart_from_docs() -> None:
    """``test`` needs no docs toolchain; ``docs`` has it (with a formatter); ``dev`` has both."""
    extras: dict[str, set[str]] = {}
    for req in DIST.requires or []:
        name, _, marker = req.partition(";")
        if "extra ==" in marker:
            extra = marker.split("extra ==")[1].strip().strip("'\"")
            extras.setdefault(extra, set()).add(name.split("[")[0].split(">")[0].strip())
    assert {"test", "docs", "dev"} <= set(extras)
    assert not {n for n in extras["test"] if n.startswith("mkdocs")}, extras["test"]
    assert {"pytest", "pytest-xdist", "hypothesis"} <= extras["test"]
    assert {"mkdocs", "mkdocs-material", "mkdocstrings", "ruff"} <= extras["docs"]
    assert "shmshare" in extras["dev"]  # shmshare[test,docs]


@wheel_only
def test_wheel_is_abi3_for_310() -> None:
    """One wheel serves every CPython from 3.10: tagged cp310-abi3, extension .abi3.so."""
    tags = [line.split(": ", 1)[1] for line in (DIST.read_text("WHEEL") or "").splitlines()
            if line.startswith("Tag: ")]
    assert tags and all(t.startswith("cp310-abi3-") for t in tags), tags
    names = [str(f) for f in DIST.files or []]
    assert any(n.startswith("shmshare/_core/_lib.abi3.") for n in names), names


@wheel_only
def test_wheel_has_no_build_inputs() -> None:
    """The C sources, headers, cdefs and the cffi build script stay in the sdist."""
    names = [str(f) for f in DIST.files or [] if str(f).startswith("shmshare/")]
    assert "shmshare/py.typed" in names
    inputs = [n for n in names if n.endswith((".c", ".h")) or n.endswith("/_build.py")]
    assert not inputs, inputs


@pytest.mark.skipif(os.environ.get("SHMSHARE_TEST_INSTALLED") != "1",
                    reason="only .ci/run promises an installed wheel (SHMSHARE_TEST_INSTALLED=1)")
def test_suite_runs_against_the_installed_wheel() -> None:
    """Under CI the tests import the installed wheel, not the checkout's sources."""
    here = Path(shmshare.__file__).resolve()
    assert ROOT / "shmshare" not in here.parents, f"shmshare imported from the checkout: {here}"
    assert not _editable()


def _build_script() -> ModuleType:
    path = ROOT / "shmshare" / "_core" / "_build.py"
    if not path.is_file():
        pytest.skip("no shmshare/_core/_build.py here (neither a checkout nor an sdist)")
    spec = importlib.util.spec_from_file_location("shmshare_build_script", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_build_failure_names_compiler_and_headers(tmp_path: Path) -> None:
    """Building from source without a compiler or Python.h says which, and how to get them."""
    build = _build_script()
    assert build.missing_prerequisites() is None  # this machine can build
    message = build.missing_prerequisites(cc="no-such-cc --flag", include_dir=str(tmp_path))
    assert "no C compiler: 'no-such-cc --flag'" in message
    assert f"no Python headers: {tmp_path}/Python.h" in message
    assert "python3-dev" in message and "binary wheel" in message
    only_headers = build.missing_prerequisites(include_dir=str(tmp_path))
    assert "C compiler" not in only_headers.split("\n")[0] and "Python headers" in only_headers


def test_readme_has_two_commands_and_ci_runs_the_test_one() -> None:
    """The README's "Get started" has two commands; .ci/run runs the test one verbatim."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Get started")
    block = readme[readme.index("```sh\n", start) + 6:readme.index("```\n", start + 20)]
    commands = [line for line in block.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2, commands
    demo, tests = commands
    assert "examples/quickstart.py" in demo and "pytest" in tests
    assert "-e " not in tests, "the suite must run against a built install, not an editable one"
    ci = ROOT / ".ci" / "run"
    if not ci.is_file():
        pytest.skip("no .ci/run here (an sdist carries no CI scripts)")
    assert f"\n{tests} || status=$?\n" in ci.read_text()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is new in Python 3.11")
def test_cibuildwheel_builds_one_abi3_wheel_per_linux_platform() -> None:
    """cibuildwheel: manylinux_2_17 and musllinux, x86_64 and aarch64, smoke-tested;
    the workflow runs it, and .ci/run."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["cibuildwheel"]
    assert config["build"].split()[0] == "cp310-*"  # the abi3 wheel, reused for later ones
    assert config["test-command"] == "python {project}/tests/wheel_smoke.py"
    assert (ROOT / "tests" / "wheel_smoke.py").is_file()
    linux = config["linux"]
    assert set(linux["archs"]) == {"x86_64", "aarch64"}
    assert linux["manylinux-x86_64-image"] == linux["manylinux-aarch64-image"] == "manylinux2014"
    assert linux["musllinux-x86_64-image"].startswith("musllinux_")
    workflow = ROOT / ".github" / "workflows" / "wheels.yml"
    if not workflow.is_file():
        pytest.skip("no .github/ here (an sdist carries no CI files)")
    text = workflow.read_text()
    assert "pypa/cibuildwheel@" in text and "run: .ci/run" in text
