"""Start-up cost: what ``import shmshare`` and the pytest plugin import (modules, not times)."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import run_python

# Modules that cost start-up time and that plain use of a SharedDict never needs.
HEAVY = ["multiprocessing", "dataclasses", "inspect", "secrets", "uuid", "shutil",
         "subprocess", "hashlib"]

_REPORT = "import json, sys; print(json.dumps(sorted(sys.modules)))"


def _modules_after(code: str, cwd: Path | None = None) -> set[str]:
    # json is imported by the report itself: look at the modules before it.
    probe = (f"import sys\n{code}\nbefore = sorted(sys.modules)\n"
             "import json\nprint(json.dumps(before))")
    if cwd is not None:  # a project of its own, and a project dir no other run uses
        probe = (f"import os\nos.chdir({str(cwd)!r})\n"
                 f"os.environ['SHMSHARE_DIR'] = {str(cwd / 'shm')!r}\n") + probe
    return set(json.loads(run_python(probe).stdout.strip().splitlines()[-1]))


def test_import_shmshare_imports_nothing_heavy() -> None:
    """``import shmshare`` loads no heavy module and none of shmshare's submodules."""
    mods = _modules_after("import shmshare")
    assert not [m for m in [*HEAVY, "json"] if m in mods]
    assert not [m for m in mods if m.startswith("shmshare.") and m != "shmshare._version"]


def test_using_a_shared_dict_imports_nothing_heavy() -> None:
    """Creating and using a SharedDict does not import multiprocessing, dataclasses..."""
    mods = _modules_after("from shmshare import SharedDict\n"
                          "d = SharedDict({'a': 1})\nassert d['a'] == 1\nd.detach()")
    assert not [m for m in [*HEAVY, "json", "logging"] if m in mods]


def test_names_load_on_first_use() -> None:
    """Every public name resolves, and Manager brings multiprocessing only when asked for."""
    mods = _modules_after("import shmshare\n"
                          "for n in shmshare.__all__: getattr(shmshare, n)\n"
                          "assert 'Manager' in dir(shmshare)")
    assert "multiprocessing" in mods
    out = run_python("import shmshare\ntry:\n    shmshare.NoSuchThing\nexcept AttributeError "
                     "as e:\n    print(e)").stdout
    assert "no attribute 'NoSuchThing'" in out


def test_pytest_plugin_imports_nothing_of_shmshare_until_used(tmp_path: Path) -> None:
    """A pytest run that uses none of the plugin's fixtures loads no object, core or segment.

    (When crashed runs left directories behind, the end of a run sweeps them,
    which does import more; here the project dir has none.)
    """
    (tmp_path / "test_unrelated.py").write_text("def test_nothing():\n    pass\n")
    mods = _modules_after("import pytest\n"
                          "rc = pytest.main(['-q', '-p', 'no:cacheprovider', '-p', 'no:xdist'])\n"
                          "assert rc == 0, rc", cwd=tmp_path)
    assert "shmshare.pytest_plugin" in mods  # the plugin was loaded...
    loaded = sorted(m for m in mods if m.startswith("shmshare."))
    heavy = [m for m in loaded if m.split(".")[1] in ("objects", "_core", "segment", "manager")]
    assert not heavy, loaded  # ...but nothing it does not need
    assert "multiprocessing" not in mods
