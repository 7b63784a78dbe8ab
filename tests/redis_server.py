"""A real redis-server for the tests: a unix socket and a loopback port, a password.

Each server is started in its own temp dir and always stopped; every wait is bounded.
"""

from __future__ import annotations

import os
import secrets
import select
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REDIS_SERVER = shutil.which("redis-server")
START_TIMEOUT = 30.0  # seconds (a loaded CI machine can take more than 10)


@dataclass
class RedisServer:
    proc: subprocess.Popen[str]
    socket_path: Path
    port: int
    password: str

    @property
    def unix_url(self) -> str:
        return f"unix://:{self.password}@{self.socket_path}"

    @property
    def tcp_url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(directory: Path, *, port: int | None = None, password: str | None = None,
                 appendonly: bool = False, extra: tuple[str, ...] = ()) -> RedisServer:
    """Start redis-server and return once its log says it accepts connections.

    ``port`` and ``password`` given again restart a server where it was (its data
    survives in ``directory`` with ``appendonly``, which syncs every write).
    """
    assert REDIS_SERVER is not None
    password = secrets.token_hex(16) if password is None else password
    sock, port = directory / "redis.sock", _free_port() if port is None else port
    aof = ["--appendonly", "yes", "--appendfsync", "always"] if appendonly else [
        "--appendonly", "no"]
    proc = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--unixsocket", str(sock),
         "--unixsocketperm", "700", "--requirepass", password, "--save", "",
         *aof, "--dir", str(directory), "--daemonize", "no",
         "--loglevel", "notice", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0,
        preexec_fn=_die_with_parent)
    assert proc.stdout is not None
    # Raw reads of the pipe: a buffered readline() would keep lines that select()
    # can no longer see, and wait for more output that never comes.
    fd = proc.stdout.fileno()
    deadline, log = time.monotonic() + START_TIMEOUT, b""
    while b"Ready to accept connections" not in log:
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(0.0, remaining))
        chunk = os.read(fd, 65536) if ready else b""
        log += chunk
        if not chunk or remaining <= 0:
            stop_server(proc)  # type: ignore[arg-type]
            raise RuntimeError("redis-server did not start:\n" + log.decode(errors="replace"))
    return RedisServer(proc, sock, port, password)  # type: ignore[arg-type]


def _die_with_parent() -> None:
    """In the server's child before exec: the kernel sends it SIGTERM when the test
    process dies (PR_SET_PDEATHSIG), so a run killed before its teardown (SIGKILL,
    a timeout) leaves no redis-server behind."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def stop_server(proc: subprocess.Popen[str]) -> None:
    """Stop redis-server (SIGTERM, then SIGKILL past 10 s) and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server per test module (stopped at its end)."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server); "
                    "the Redis store tests need a real server")
    pytest.importorskip("redis", reason="redis-py is not installed (pip install shmshare[redis])")
    server = start_server(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        stop_server(server.proc)


@pytest.fixture(scope="module", params=["shm", "redis"])
def kw(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The keywords of an anonymous object: shared memory, or a url of the module's server
    (a test that takes ``kw`` runs on both stores)."""
    if request.param == "shm":
        return {}
    pytest.importorskip("redis", reason="redis-py is not installed (pip install shmshare[redis])")
    return {"url": request.getfixturevalue("redis_server").unix_url}


@pytest.fixture
def store(redis_server: RedisServer):  # type: ignore[no-untyped-def]
    """A RedisStore on the module's server, over the unix socket."""
    from shmshare.stores.redis import RedisStore

    return RedisStore(redis_server.unix_url)


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    """An object name of this test's own (the server is shared by the module)."""
    return f"t-{request.node.name}-{secrets.token_hex(4)}".replace("{", "(").replace("}", ")")


# ------------------------------------------------------------------ Redis Cluster
REDIS_CLI = shutil.which("redis-cli")


@dataclass
class RedisClusterServers:
    servers: list[RedisServer]
    password: str

    @property
    def url(self) -> str:
        return f"redis+cluster://:{self.password}@127.0.0.1:{self.servers[0].port}"


def start_cluster(directory: Path, masters: int = 3) -> RedisClusterServers:
    """``masters`` cluster-enabled redis-servers on loopback, joined by ``redis-cli
    --cluster create`` (no replicas); returns once every node says cluster_state:ok."""
    assert REDIS_CLI is not None
    password = secrets.token_hex(16)
    servers: list[RedisServer] = []
    try:
        for i in range(masters):
            node_dir = directory / f"node{i}"
            node_dir.mkdir()
            servers.append(start_server(node_dir, password=password, extra=(
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-port", str(_free_port()),  # (the default, port + 10000, may not fit)
                "--cluster-node-timeout", "5000", "--masterauth", password)))
        subprocess.run([REDIS_CLI, "-a", password, "--no-auth-warning", "--cluster", "create",
                        *[f"127.0.0.1:{s.port}" for s in servers], "--cluster-replicas", "0",
                        "--cluster-yes"], check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + START_TIMEOUT
        for s in servers:
            while True:
                info = subprocess.run([REDIS_CLI, "-a", password, "--no-auth-warning", "-p",
                                       str(s.port), "cluster", "info"], capture_output=True,
                                      text=True, timeout=30).stdout
                if "cluster_state:ok" in info:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the cluster did not come up:\n{info}")
                time.sleep(0.1)
    except BaseException:
        for s in servers:
            stop_server(s.proc)
        raise
    return RedisClusterServers(servers, password)


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """A 3-master Redis Cluster on loopback for one test module (stopped at its end)."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server); "
                    "the Redis Cluster tests need real servers")
    if REDIS_CLI is None:
        pytest.skip("redis-cli is not installed (Debian's redis-tools, which redis-server "
                    "depends on); it joins the servers into a cluster")
    pytest.importorskip("redis", reason="redis-py is not installed (pip install shmshare[redis])")
    cluster = start_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield cluster
    finally:
        for s in cluster.servers:
            stop_server(s.proc)
