"""Store urls, the trust default, pools across fork, and clear errors when the server is down."""

from __future__ import annotations

import os
import pickle

import pytest
from helpers import fork_call
from redis_server import RedisServer, redis_server, store  # noqa: F401  (fixtures)

pytest.importorskip("redis", reason="redis-py is not installed (pip install shmshare[redis])")

from shmshare import ShmshareError
from shmshare.errors import ShmValueError
from shmshare.stores import StoreUnavailableError, UntrustedStoreError
from shmshare.stores.redis import RedisStore, parse_url


def test_url_forms() -> None:
    """redis://, rediss:// and unix:// urls parse into host, port, db and credentials."""
    u = parse_url("redis://alice:s%40cret@db.example:6380/3")
    assert (u.scheme, u.host, u.port, u.db, u.username, u.password) == (
        "redis", "db.example", 6380, 3, "alice", "s@cret")
    assert "s%40cret" not in str(u) and "***" in str(u)
    assert parse_url("rediss://h").port == 6379 and parse_url("rediss://h").is_authenticated
    v = parse_url("unix:///run/redis.sock?db=2")
    assert (v.path, v.db, v.is_local) == ("/run/redis.sock", 2, True)


@pytest.mark.parametrize("url", ["http://h:1", "redis://", "unix://", "redis://h:1/x"])
def test_bad_url(url: str) -> None:
    """A malformed url is a ShmValueError (a ValueError) saying what is wrong."""
    with pytest.raises(ShmValueError, match="store url"):
        parse_url(url)


def test_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """SHMSHARE_URL is the default url; its absence is a clear error."""
    monkeypatch.setenv("SHMSHARE_URL", "redis://127.0.0.1:1/0")
    assert parse_url().port == 1
    monkeypatch.delenv("SHMSHARE_URL")
    with pytest.raises(ValueError, match="SHMSHARE_URL"):
        parse_url()


def test_remote_unauthenticated_is_refused() -> None:
    """Plain TCP to another host with no password needs trust=True (pickles run code)."""
    with pytest.raises(UntrustedStoreError, match="trust=True") as info:
        RedisStore("redis://192.0.2.7:6379/0")
    assert isinstance(info.value, PermissionError) and isinstance(info.value, ShmshareError)
    RedisStore("redis://192.0.2.7:6379/0", trust=True)
    RedisStore("redis://:pw@192.0.2.7:6379/0")
    RedisStore("redis://alice:pw@192.0.2.7:6379/0")
    RedisStore("rediss://192.0.2.7:6379/0")
    RedisStore("unix:///tmp/x.sock")


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "redis://localhost:6379/0",
                                 "redis://[::1]:6379/0", "redis+cluster://127.0.0.1:7000"])
def test_loopback_without_password_is_refused(url: str) -> None:
    """Every user of this machine can reach a loopback port: no password needs trust=True."""
    with pytest.raises(UntrustedStoreError, match="every user of this machine"):
        RedisStore(url)
    RedisStore(url, trust=True)
    RedisStore(url.replace("://", "://:pw@"))


def test_world_writable_socket_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A unix socket every user may open is refused like loopback; a private one is used."""
    import socket

    path = tmp_path / "r.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        path.chmod(0o777)
        with pytest.raises(UntrustedStoreError, match="every user"):
            RedisStore(f"unix://{path}")
        RedisStore(f"unix://{path}", trust=True)
        RedisStore(f"unix://:pw@{path}")
        path.chmod(0o770)
        RedisStore(f"unix://{path}")


def test_braces_in_names_are_refused() -> None:
    """Object names keep their keys under one {name} hash tag, so braces are refused."""
    with pytest.raises(ShmValueError, match="braces"):
        RedisStore.key("a{b", "x")
    assert RedisStore.key("jobs", "items") == "shmshare:{jobs}:items"


def test_server_down_names_the_url(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """No server behind the url: StoreUnavailableError (a ConnectionError) naming it."""
    s = RedisStore(f"unix://:hidden@{tmp_path}/none.sock", socket_timeout=1.0)
    with pytest.raises(StoreUnavailableError, match=r"none\.sock") as info:
        s.ping()
    assert isinstance(info.value, ConnectionError) and "hidden" not in str(info.value)
    e = pickle.loads(pickle.dumps(info.value))
    assert type(e) is StoreUnavailableError and str(e) == str(info.value)


def test_wrong_password(redis_server: RedisServer) -> None:  # noqa: F811
    """A wrong or missing password is a StoreUnavailableError that says so."""
    for url in (f"unix://:wrong@{redis_server.socket_path}", f"unix://{redis_server.socket_path}"):
        with pytest.raises(StoreUnavailableError, match=r"password|credentials"):
            RedisStore(url, socket_timeout=1.0).ping()


def test_tcp_and_unix(redis_server: RedisServer) -> None:  # noqa: F811
    """The same server answers over its loopback port and its unix socket."""
    RedisStore(redis_server.tcp_url).ping()
    RedisStore(redis_server.unix_url).ping()


def test_pool_rebuilt_after_fork(store: RedisStore) -> None:  # noqa: F811
    """A forked child gets its own connections; the parent's keep working."""
    store.client.set("shmshare:{fork}:k", b"parent")

    def child() -> int:
        c = store.client
        c.set("shmshare:{fork}:k", b"child")
        return 0 if c.get("shmshare:{fork}:k") == b"child" else 1

    for _ in range(3):
        assert fork_call(child) == 0
        assert store.client.get("shmshare:{fork}:k") == b"child"
        store.client.set("shmshare:{fork}:k", b"parent")
        assert store.client.get("shmshare:{fork}:k") == b"parent"
    store.client.delete("shmshare:{fork}:k")
    assert os.getpid() > 0


def test_store_pickles_by_url(store: RedisStore) -> None:  # noqa: F811
    """A store pickles as its url and trust flag."""
    again = pickle.loads(pickle.dumps(store))
    assert again.address == store.address
    again.ping()
