"""Connections to a Redis (or Valkey) server: urls, trust, one pool per process.

* **Urls**: ``redis://[user:password@]host[:port][/db]``, ``rediss://`` (TLS) and
  ``unix://[user:password@]/path/to/socket[?db=N]``; ``SHMSHARE_URL`` is the default.
  ``redis+cluster://[user:password@]host[:port]`` (``rediss+cluster://`` with TLS)
  names one node of a Redis Cluster, through redis-py's ``RedisCluster``: every key
  of an object has the hash tag ``{name}``, so each script runs on one node.
* **Trust**: values are pickles and unpickling is code execution, so by default
  only a connection that others cannot write through is used: a password or
  ACL user, TLS, or a unix socket that not every user may open.  Anything
  else -- plain TCP without a password, to another host or to this one
  (every local user can reach a loopback port), or a world-writable socket --
  raises :class:`UntrustedStoreError` unless ``trust=True``.
* **Pools**: one pool per url per process, made lazily and forgotten in a
  forked child (``_core.fork_hooks``), because a socket shared with the
  parent interleaves both processes' replies.  Blocking waits (BLPOP, BLMOVE)
  take their connection from a second pool, so a waiter never holds one that
  plain commands need; each wait blocks at most :data:`MAX_BLOCK` seconds on
  the server, so the socket timeout bounds every call.
* **Failures**: a refused or dropped connection is retried a bounded number
  of times, then raises :class:`StoreUnavailableError` naming the url (with
  the password hidden); a server that does not answer within the socket
  timeout raises it at once (no retry: a silent link costs one socket
  timeout, not one per try).  A script whose reply was lost may run twice on a
  retry; the scripts here are written so that this is harmless, except a
  queue ``put``, which may then enqueue its item twice (at-least-once).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from shmshare._core import fork_hooks
from shmshare.errors import ShmValueError
from shmshare.stores import URL_ENV
from shmshare.stores.errors import StoreUnavailableError, UntrustedStoreError

__all__ = ["MAX_BLOCK", "RedisStore", "StoreURL", "parse_url"]

MAX_BLOCK = 1.0  # seconds a blocking command may wait on the server in one call
_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
# TLS settings a rediss:// url may carry in its query, passed to redis-py as they are:
# the CA that signed the server's certificate (else the system's), a client
# certificate and key (servers that ask for one), and whether to verify the server.
_TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
_CERT_REQS = ("required", "optional", "none")


@dataclass(frozen=True)
class StoreURL:
    """A parsed store url; ``str()`` of it never shows the password."""

    url: str
    scheme: str
    host: str | None
    port: int | None
    path: str | None
    db: int
    username: str | None
    password: str | None
    # rediss:// only: redis-py's TLS options from the url's query (see _TLS_OPTIONS)
    tls: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        if self.password is None:
            return self.url
        parts = urlsplit(self.url)
        userinfo, _, hostpart = parts.netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        return parts._replace(netloc=f"{user}:***@{hostpart}").geturl()

    @property
    def is_local(self) -> bool:
        """True for a unix socket or a loopback host: nobody off this machine writes here."""
        if self.scheme == "unix":
            return True
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host or "").is_loopback
        except ValueError:
            return False

    @property
    def is_authenticated(self) -> bool:
        """True when the server must check who we are (password/ACL) or TLS protects the
        link (a verified server: not with ``ssl_cert_reqs=none``)."""
        return self.password is not None or (
            self.scheme.startswith("rediss") and dict(self.tls).get("ssl_cert_reqs") != "none")

    @property
    def is_cluster(self) -> bool:
        """True for ``redis+cluster://`` and ``rediss+cluster://``: a Redis Cluster."""
        return self.scheme.endswith("+cluster")


def parse_url(url: str | None = None) -> StoreURL:
    """Parse ``url`` (or ``$SHMSHARE_URL``); raise ShmValueError saying what is wrong."""
    if url is None:
        url = os.environ.get(URL_ENV)
        if not url:
            raise ShmValueError(f"no store url given and ${URL_ENV} is not set; pass "
                                "url='redis://host:6379/0' or set the variable")
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ShmValueError(f"store url {url!r} has scheme {parts.scheme!r}; use one of "
                            + ", ".join(f"{s}://" for s in _SCHEMES))
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    query = parse_qs(parts.query)
    try:
        if parts.scheme == "unix":
            if not parts.path:
                raise ShmValueError(f"store url {url!r} names no socket path "
                                    "(unix:///path/to/redis.sock)")
            db = int(query.get("db", ["0"])[0])
            return StoreURL(url, "unix", None, None, parts.path, db, username, password)
        if not parts.hostname:
            raise ShmValueError(f"store url {url!r} names no host (redis://host:6379/0)")
        path = parts.path.strip("/")
        db = int(path) if path else int(query.get("db", ["0"])[0])
        port = parts.port or 6379
        if db != 0 and parts.scheme.endswith("+cluster"):
            raise ShmValueError(f"store url {url!r}: a Redis Cluster has only db 0")
    except ValueError as e:
        if isinstance(e, ShmValueError):
            raise
        raise ShmValueError(f"store url {url!r}: {e} (the port and db must be numbers)") from None
    return StoreURL(url, parts.scheme, parts.hostname, port, None, db, username, password,
                    _tls_options(url, parts.scheme, query))


def _tls_options(url: str, scheme: str, query: dict[str, list[str]]
                 ) -> tuple[tuple[str, str], ...]:
    given = {k: v[-1] for k, v in query.items() if k in _TLS_OPTIONS}
    if given and not scheme.startswith("rediss"):
        raise ShmValueError(f"store url {url!r} gives TLS options ({', '.join(given)}) "
                            f"but its scheme is {scheme}://: use rediss://")
    reqs = given.get("ssl_cert_reqs")
    if reqs is not None and reqs not in _CERT_REQS:
        raise ShmValueError(f"store url {url!r}: ssl_cert_reqs must be one of "
                            f"{', '.join(_CERT_REQS)}, not {reqs!r}")
    return tuple(sorted(given.items()))


def _connection_kwargs(u: StoreURL, socket_timeout: float) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "db": u.db, "username": u.username, "password": u.password,
        "socket_timeout": socket_timeout, "socket_connect_timeout": min(socket_timeout, 2.0),
        # A refused or reset connection is tried again at once; a reply that does not
        # come within the socket timeout is not (each try would wait that long again,
        # so a silent link would hold the caller for several socket timeouts).
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 3,
                       supported_errors=(redis.ConnectionError,)),
        "retry_on_error": [redis.ConnectionError],
    }
    if u.is_cluster:
        del kwargs["db"], kwargs["retry_on_error"]
        kwargs.update(host=u.host, port=u.port, ssl=u.scheme == "rediss+cluster", **dict(u.tls))
    elif u.scheme == "unix":
        kwargs.update(path=u.path, connection_class=redis.UnixDomainSocketConnection)
    else:
        kwargs.update(host=u.host, port=u.port)
        if u.scheme == "rediss":
            kwargs.update(connection_class=redis.SSLConnection, **dict(u.tls))
    return kwargs


# (url, socket_timeout) -> clients on (plain pool, blocking pool) of this process.  A
# client is kept, not made per call: making a redis.Redis costs more than a round trip,
# and one is safe to share between threads (each command takes a pooled connection).
_pools: dict[tuple[str, float], tuple[redis.Redis, redis.Redis]] = {}
_pools_lock = threading.Lock()
_inherited: list[object] = []  # a forked child's copies of the parent's pools, never used


def _forget_pools_after_fork() -> None:
    global _pools_lock
    # Keep the parent's pools referenced but unused: closing their sockets
    # here could shut down connections the parent is still talking on.
    _inherited.extend(_pools.values())
    _pools.clear()
    _pools_lock = threading.Lock()


fork_hooks.at_fork(after_in_child=_forget_pools_after_fork)


def _make_client(u: StoreURL, socket_timeout: float) -> redis.Redis:
    kwargs = _connection_kwargs(u, socket_timeout)
    if u.is_cluster:
        # RedisCluster keeps a pool per node and follows MOVED/ASK redirections; it
        # has Redis's command methods (not its class), which is all the store uses.
        return cast("redis.Redis", redis.RedisCluster(**kwargs))
    return redis.Redis(connection_pool=redis.ConnectionPool(**kwargs))


def _clients_for(u: StoreURL, socket_timeout: float) -> tuple[redis.Redis, redis.Redis]:
    key = (u.url, socket_timeout)
    clients = _pools.get(key)
    if clients is not None:
        return clients
    with _pools_lock:
        clients = _pools.get(key)
        if clients is None:
            with _connecting(u):
                clients = _pools[key] = (_make_client(u, socket_timeout),
                                         _make_client(u, socket_timeout + MAX_BLOCK))
        return clients


@contextlib.contextmanager
def _connecting(u: StoreURL) -> Iterator[None]:
    """A cluster client asks its seed node for the slots when made: name the url then."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError, redis.RedisClusterException) as e:
        raise StoreUnavailableError(f"connect: store {u} is unavailable ({e}); is the "
                                    "cluster running and reachable?") from e


def _untrusted(u: StoreURL) -> str | None:
    """Why others could write to the store at ``u`` (None when only its users can)."""
    if u.is_authenticated:
        return None
    if u.scheme == "unix":
        try:
            mode = os.stat(u.path or "").st_mode
        except OSError:
            return None  # not there (yet): connecting will say so
        if mode & 0o002:
            return f"the socket {u.path} can be opened by every user of this machine"
        return None
    if u.is_local:
        return (f"an unauthenticated TCP connection to {u.host} is open to every user of "
                "this machine")
    return f"an unauthenticated TCP connection to {u.host}, which is not this machine, is " \
           "open to anyone who reaches the server"


class RedisStore:
    """One Redis server as a store: clients from this process's pools, scripts, key names.

    Pickles by url, so it can be handed to a process on another host.
    """

    def __init__(self, url: str | None = None, *, trust: bool = False,
                 socket_timeout: float = 5.0) -> None:
        self.address = parse_url(url)
        self.trust = trust
        self.socket_timeout = socket_timeout
        reason = None if trust else _untrusted(self.address)
        if reason is not None:
            raise UntrustedStoreError(
                f"refusing store {self.address}: {reason}, and whoever can write to it can "
                "run code in this process (values are pickles); give a password "
                "(redis://:pw@host), an ACL user, rediss:// (TLS) or a unix socket that "
                "only you (or your group) can open, or pass trust=True")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.address.url, self.trust, self.socket_timeout))

    def __repr__(self) -> str:
        return f"RedisStore({str(self.address)!r})"

    @property
    def client(self) -> redis.Redis:
        """A client on this process's pool for short commands."""
        return _clients_for(self.address, self.socket_timeout)[0]

    @property
    def blocking_client(self) -> redis.Redis:
        """A client whose connections are only used by blocking waits (<= MAX_BLOCK each)."""
        return _clients_for(self.address, self.socket_timeout)[1]

    @staticmethod
    def key(name: str, part: str) -> str:
        """The key of ``part`` of object ``name``: one hash tag per object, for Cluster."""
        if "{" in name or "}" in name:
            raise ShmValueError(f"object name {name!r} may not contain braces (they would "
                                "break the {name} hash tag that keeps its keys together)")
        return f"shmshare:{{{name}}}:{part}"

    @contextlib.contextmanager
    def unavailable(self, doing: str) -> Iterator[None]:
        """Turn redis-py's connection failures into StoreUnavailableError naming the url."""
        try:
            yield
        except redis.AuthenticationError as e:
            raise StoreUnavailableError(f"{doing}: store {self.address} refused the "
                                        f"credentials ({e}); check the user and password "
                                        "in the url") from e
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise StoreUnavailableError(f"{doing}: store {self.address} is unavailable ({e}); "
                                        "is redis-server running and reachable?") from e
        except redis.ResponseError as e:
            if "NOAUTH" in str(e) or "WRONGPASS" in str(e):
                raise StoreUnavailableError(f"{doing}: store {self.address} requires a "
                                            f"password ({e}); put it in the url") from e
            raise

    def script(self, source: str) -> Script:
        """A Lua script run by EVALSHA (loaded again if the server forgot it)."""
        return Script(self, source)

    def ping(self) -> None:
        """Check the server answers; StoreUnavailableError if not."""
        with self.unavailable("ping"):
            self.client.ping()


class Script:
    """A Lua script bound to a store; calls translate connection failures."""

    def __init__(self, store: RedisStore, source: str) -> None:
        self.store = store
        self.source = source
        self._script = redis.Redis().register_script(source)  # only computes the sha

    def __call__(self, keys: list[str], args: list[Any], doing: str = "script") -> Any:
        with self.store.unavailable(doing):
            return self._script(keys=keys, args=args, client=self.store.client)


def _rebuild(url: str, trust: bool, socket_timeout: float) -> RedisStore:
    return RedisStore(url, trust=trust, socket_timeout=socket_timeout)
