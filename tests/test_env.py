"""shmshare._env.getenv answers as os.environ.get, whatever changed the environment."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shmshare._env import getenv

NAME = "SHMSHARE_TEST_ENV_VALUE"


def test_unset_set_changed_deleted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(NAME, raising=False)
    assert getenv(NAME) is None
    monkeypatch.setenv(NAME, "first")
    assert getenv(NAME) == "first"
    os.environ[NAME] = "second"
    assert getenv(NAME) == "second"
    monkeypatch.setenv(NAME, "")
    assert getenv(NAME) == ""
    del os.environ[NAME]
    assert getenv(NAME) is None
    monkeypatch.delenv(NAME, raising=False)


def test_values_os_environ_decodes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Non-ASCII and undecodable bytes come back as os.environ gives them."""
    for raw in ("ünïcode/dir", "/tmp/\udcff-bad"):
        monkeypatch.setenv(NAME, raw)
        assert getenv(NAME) == os.environ.get(NAME) == raw
    if hasattr(os, "environb"):
        os.environb[NAME.encode()] = b"/tmp/\xfe\xff"
        assert getenv(NAME) == os.environ.get(NAME)
    monkeypatch.delenv(NAME, raising=False)


def test_a_replaced_os_environ_is_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """os.environ swapped for a plain mapping (some test harnesses do): that is read."""
    monkeypatch.setattr(os, "environ", {NAME: "from the replacement"})
    assert getenv(NAME) == "from the replacement"
    assert getenv("SHMSHARE_TEST_ENV_UNSET") is None


def test_inherited_environment() -> None:
    """A variable a process was started with (never set through os.environ)."""
    code = ("from shmshare._env import getenv; import os; "
            f"print(getenv({NAME!r}) == os.environ.get({NAME!r}) == 'inherited')")
    env = dict(os.environ, **{NAME: "inherited"})
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "True"
