"""rediss://: the store over TLS, against a real redis-server with a TLS port and a
certificate signed by a CA the test makes (openssl)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import mp_run
from redis_server import REDIS_SERVER, RedisServer, _free_port, start_server, stop_server

import shmshare
from shmshare.errors import ShmValueError
from shmshare.stores.errors import StoreUnavailableError
from shmshare.stores.redis.connection import parse_url

pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None or shutil.which("openssl") is None,
    reason="needs redis-server and openssl (Debian's redis-server and openssl packages)")


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, int,
                                                                             Path]]:
    d = tmp_path_factory.mktemp("redis-tls")
    ca_key, ca, key, csr, crt = (d / n for n in ("ca.key", "ca.crt", "srv.key", "srv.csr",
                                                 "srv.crt"))
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
             "/CN=shmshare test CA", "-keyout", str(ca_key), "-out", str(ca))
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", str(key), "-out", str(csr))
    ext = d / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
             "-CAcreateserial", "-days", "1", "-extfile", str(ext), "-out", str(crt))
    tls_port = _free_port()
    try:
        server = start_server(d, extra=("--tls-port", str(tls_port), "--tls-cert-file",
                                        str(crt), "--tls-key-file", str(key),
                                        "--tls-ca-cert-file", str(ca),
                                        "--tls-auth-clients", "no"))
    except RuntimeError as e:
        if "tls" in str(e).lower():
            pytest.skip(f"this redis-server was built without TLS: {str(e)[-200:]}")
        raise
    try:
        yield server, tls_port, ca
    finally:
        stop_server(server.proc)


def _child(url: str) -> int:
    d = shmshare.SharedDict("tls-d", url=url, create=False)
    d["child"] = d["parent"] + 1
    return 0


def test_dict_over_tls_across_processes(tls_server: tuple[RedisServer, int, Path]) -> None:
    server, port, ca = tls_server
    url = f"rediss://:{server.password}@127.0.0.1:{port}/0?ssl_ca_certs={ca}"
    d = shmshare.SharedDict("tls-d", url=url)
    try:
        d["parent"] = 41
        assert mp_run("spawn", _child, url) == 0
        assert d["child"] == 42
    finally:
        d.unlink()
        d.detach()


def test_unverified_server_certificate_is_refused(
        tls_server: tuple[RedisServer, int, Path]) -> None:
    """Without the CA that signed it, the server's certificate does not verify: a clear
    error naming the url (its password hidden), not a silent plain connection."""
    server, port, _ = tls_server
    url = f"rediss://:{server.password}@127.0.0.1:{port}/0"
    with pytest.raises(StoreUnavailableError) as info:
        shmshare.SharedDict("tls-x", url=url)
    assert server.password not in str(info.value) and str(port) in str(info.value)


def test_tls_options_need_rediss() -> None:
    with pytest.raises(ShmValueError, match="rediss://"):
        parse_url("redis://127.0.0.1:6379/0?ssl_ca_certs=/ca.pem")
    with pytest.raises(ShmValueError, match="ssl_cert_reqs"):
        parse_url("rediss://127.0.0.1:6379/0?ssl_cert_reqs=maybe")
    assert not parse_url("rediss://127.0.0.1/0?ssl_cert_reqs=none").is_authenticated
    assert parse_url("rediss://h/0?ssl_ca_certs=/ca.pem").tls == (("ssl_ca_certs", "/ca.pem"),)
