"""HTTPS targets against a real local TLS server with a CA made for the test: --ca-file, --insecure
(explicit), SSL_CERT_FILE, proxies from the environment only when asked; the report names the timing
path (kernel timestamps for plain HTTP only)."""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.loadgen.conftest import Scripted, start_scripted
from tests.support.procs import free_port
from tests.support.real import require_binary


def make_ca(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate it signed for 127.0.0.1 / localhost (openssl, EC keys)."""
    openssl = require_binary("openssl", "Debian package openssl")
    ca_key, ca, key, csr, cert = (
        folder / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str | Path) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True)

    ca_extensions = [
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]
    run(
        "req",
        "-x509",
        *ec,
        *ca_extensions,
        "-keyout",
        ca_key,
        "-out",
        ca,
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
    )
    run("req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    extensions = folder / "server.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
        "-days", "2", "-extfile", extensions)  # fmt: skip
    return ca, cert, key


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Scripted, str, Path]]:
    """The scripted server on plain HTTP and HTTPS; yields it, its https URL and the CA file."""
    folder = tmp_path_factory.mktemp("tls")
    ca, cert, key = make_ca(folder)
    port = free_port()
    for scripted in start_scripted(
        folder, "--tls-port", str(port), "--tls-cert", str(cert), "--tls-key", str(key)
    ):
        yield scripted, f"https://127.0.0.1:{port}", ca


def https_run(run_loadgen, url: str, **options):
    return run_loadgen(url=url, model="scripted", concurrency=2, requests=4, output_len=3, **options)


def test_ca_file_verifies_a_private_ca(tls, run_loadgen):
    scripted, url, ca = tls
    result = https_run(run_loadgen, url, ca_file=str(ca))
    assert result.phase["requests"]["by_outcome"]["success"] == 4 == len(scripted.records(result.run.run_id))
    assert result.report["timing_path"].startswith("client read time (httpx transport: HTTPS)")


def test_insecure_is_explicit_and_works(tls, run_loadgen):
    _, url, _ = tls
    assert https_run(run_loadgen, url, insecure=True).phase["requests"]["succeeded"] == 4


def test_ssl_cert_file_still_works(tls, run_loadgen, monkeypatch):
    _, url, ca = tls
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    assert https_run(run_loadgen, url).phase["requests"]["succeeded"] == 4


def test_an_unknown_ca_fails_the_run_and_says_why(tls, tmp_path):
    _, url, _ = tls
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "loadgen", "run", "--url", url, "--model", "scripted", "--concurrency", "1",
         "--requests", "2", "--metrics-address", "none", "--progress", "none"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    line = next(line for line in result.stderr.splitlines() if "run failed" in line)
    assert "every request failed" in line and "CERTIFICATE_VERIFY_FAILED" in line


def test_plain_http_keeps_the_kernel_timestamps(tls, run_loadgen):
    scripted, _, _ = tls
    result = https_run(run_loadgen, scripted.url)
    assert result.report["timing_path"].startswith("kernel receive timestamps")


def test_proxies_from_the_environment_only_when_asked(tls, run_loadgen, monkeypatch):
    scripted, _, _ = tls
    monkeypatch.setenv("HTTP_PROXY", scripted.url)  # the scripted server answers proxy-form requests
    target = "http://proxied.invalid:9"
    result = https_run(run_loadgen, target, proxy_from_env=True)
    assert result.phase["requests"]["succeeded"] == 4
    paths = {r["path"] for r in scripted.records(result.run.run_id).values()}
    assert paths == {f"{target}/v1/chat/completions"}
    assert (
        result.report["timing_path"]
        == "client read time (httpx transport: through a proxy); no kernel timestamps"
    )
    direct = https_run(run_loadgen, target, connect_timeout="2s")  # no opt-in: the proxy is not used
    assert direct.phase["requests"]["by_outcome"]["connect"] == 4
    monkeypatch.setenv("NO_PROXY", "proxied.invalid")
    bypassed = https_run(run_loadgen, target, proxy_from_env=True, connect_timeout="2s")
    assert bypassed.phase["requests"]["by_outcome"]["connect"] == 4


@contextlib.contextmanager
def client_cert_server(cert: Path, key: Path, ca: Path) -> Iterator[str]:
    """A TLS 1.3 server that requires a client certificate: a client without one learns it only when it
    reads, from an alert (TLSV13_ALERT_CERTIFICATE_REQUIRED) or a reset."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(ca)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def refuse(raw: socket.socket) -> None:
        with contextlib.suppress(OSError), raw, context.wrap_socket(raw, server_side=True) as conn:
            conn.recv(100)

    def serve() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                raw, _ = listener.accept()
                threading.Thread(target=refuse, args=(raw,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_a_server_that_refuses_the_client_after_the_handshake_is_a_connect_failure(
    tmp_path, run_loadgen, caplog
):
    # The alert came raw from anyio's TLS stream (ssl.SSLError, not an httpx error) on some requests:
    # each was a traceback in the log and counted `malformed`.
    ca, cert, key = make_ca(tmp_path)
    with client_cert_server(cert, key, ca) as url:
        result = run_loadgen(url=url, model="m", concurrency=4, requests=60, output_len=2, ca_file=str(ca))
    assert result.phase["requests"]["by_outcome"]["connect"] == 60, result.phase["requests"]
    assert "unexpected error" not in caplog.text
