"""The exporter over real HTTP on 127.0.0.1: text and OpenMetrics, health, readiness, basic auth, TLS."""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import httpx
import pytest

from exporter.config import Config, ConfigError
from exporter.http_protocol import ServerLimits
from exporter.registry import Exporter, build_exporter
from exporter.server import ExporterServer, make_app
from exporter.web_config import MAX_CONCURRENT_CHECKS, WebConfig, load_web_config
from tests.exporter.fake_nvml import FakeGpu, FakeNvml
from tests.exporter.metrics_util import parse_text
from tests.support.real import require_binary

UUID = "GPU-00000000-1111-2222-3333-444444444444"


@contextlib.contextmanager
def serving(exporter: Exporter, web_config: WebConfig | None = None) -> Iterator[str]:
    web_config = web_config or WebConfig()
    server = ExporterServer(make_app(exporter, web_config), "127.0.0.1", 0, web_config.ssl_context).start()
    try:
        yield f"{server.scheme}://127.0.0.1:{server.port}"
    finally:
        server.close()
        exporter.close()


def fake_exporter(start: bool = True) -> Exporter:
    exporter = build_exporter(Config(), nvml=FakeNvml([FakeGpu(uuid=UUID)]), start_threads=False)
    if start:
        exporter.collectors["gpu"].sampler.run_once()
        exporter.collectors["host"].scan_engines()
        exporter.refresh()
    return exporter


def test_metrics_in_prometheus_text_with_gpu_host_and_self_metrics() -> None:
    with serving(fake_exporter()) as url:
        response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    m = parse_text(response.text)
    assert m.value("gpu_nvml_available") == 1
    assert m.value("gpu_power_usage_watts", {"gpu": "0", "uuid": UUID}) == 690
    assert m.value("host_cpu_cores") >= 1
    assert m.labels("exporter_build_info")["version"]
    for collector in ("gpu", "host"):
        assert m.value("exporter_collector_success", {"collector": collector}) == 1
        assert 0 <= m.value("exporter_collector_duration_seconds", {"collector": collector}) < 10
    assert m.value("exporter_collector_errors_total", {"collector": "gpu", "kind": "nvml"}) == 0


def test_openmetrics_when_asked() -> None:
    with serving(fake_exporter()) as url:
        response = httpx.get(
            f"{url}/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}, timeout=10
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
    assert "# TYPE gpu_energy_joules counter\n" in response.text
    assert "gpu_energy_joules_total{" in response.text


def test_health_readiness_landing_and_not_found() -> None:
    exporter = fake_exporter(start=False)
    with serving(exporter) as url:
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 503
        exporter.collectors["gpu"].sampler.run_once()
        exporter.collectors["host"].scan_engines()
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 503  # no snapshot since then
        exporter.refresh()
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
        landing = httpx.get(f"{url}/", timeout=10)
        assert landing.status_code == 200 and 'href="/metrics"' in landing.text
        assert httpx.get(f"{url}/nope", timeout=10).status_code == 404


def test_a_failing_collector_costs_only_its_own_families() -> None:
    exporter = fake_exporter()

    class Broken:
        def collect(self) -> Iterator[object]:
            raise RuntimeError("boom")

    exporter.collectors["host"].collect = Broken().collect  # type: ignore[method-assign]
    with serving(exporter) as url:
        exporter.refresh()
        exporter.refresh()
        m = parse_text(httpx.get(f"{url}/metrics", timeout=10).text)
    assert "host_cpu_cores" not in m.names()
    assert m.value("gpu_up", {"gpu": "0"}) == 1
    assert m.value("exporter_collector_success", {"collector": "host"}) == 0
    assert m.value("exporter_collector_errors_total", {"collector": "host", "kind": "exception"}) == 2


@pytest.mark.real
def test_exposition_passes_promtool_check_metrics() -> None:
    promtool = require_binary("promtool", "apt-get install prometheus; `make test` does it as root")
    with serving(fake_exporter()) as url:
        text = httpx.get(f"{url}/metrics", timeout=10).text
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    problems = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert problems == [], "promtool check metrics: syntax, types, duplicate series and lints"
    assert result.returncode == 0


def web_config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "web.yml"
    path.write_text(text)
    return path


def test_basic_auth_with_bcrypt_hashes(tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    web = load_web_config(web_config_file(tmp_path, f"basic_auth_users:\n  prometheus: '{hashed}'\n"))

    def auth(user: str, password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    with serving(fake_exporter(), web) as url:
        assert httpx.get(f"{url}/metrics", timeout=10).status_code == 401
        assert httpx.get(f"{url}/metrics", headers=auth("prometheus", "wrong"), timeout=10).status_code == 401
        assert httpx.get(f"{url}/metrics", headers=auth("nobody", "s3cret"), timeout=10).status_code == 401
        bad_header = {"Authorization": "Basic !!notbase64"}
        assert httpx.get(f"{url}/metrics", headers=bad_header, timeout=10).status_code == 401
        for _ in range(2):  # the second time from the cache of verified credentials
            ok = httpx.get(f"{url}/metrics", headers=auth("prometheus", "s3cret"), timeout=10)
            assert ok.status_code == 200 and "host_cpu_cores" in ok.text
        denied = httpx.get(f"{url}/healthz", timeout=10)
        assert denied.status_code == 401 and denied.headers["www-authenticate"].startswith("Basic")
        too_long = auth("prometheus", "x" * 73)  # bcrypt 5 raised past 72 bytes: a 500 and a traceback
        assert httpx.get(f"{url}/metrics", headers=too_long, timeout=10).status_code == 401


def test_basic_auth_checks_unknown_users_as_wrong_passwords_and_a_few_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    web = load_web_config(web_config_file(tmp_path, f"basic_auth_users:\n  prometheus: '{hashed}'\n"))
    running, most, checked = 0, 0, []
    lock = threading.Lock()
    real_checkpw = bcrypt.checkpw

    def slow_checkpw(password: bytes, hashed_password: bytes) -> bool:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            checked.append(hashed_password)
        time.sleep(0.05)  # as a cost-10 hash takes
        with lock:
            running -= 1
        return real_checkpw(password, hashed_password)

    monkeypatch.setattr(bcrypt, "checkpw", slow_checkpw)

    def header(user: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    # An unknown user costs a check, as a wrong password does (a quick refusal told which names exist).
    assert not web.check_authorization(header("nobody", "s3cret")) and len(checked) == 1
    # A flood of wrong passwords runs at most MAX_CONCURRENT_CHECKS checks at once; the rest are refused
    # at once instead of holding worker threads, so cached good credentials are never kept waiting.
    assert web.check_authorization(header("prometheus", "s3cret"))
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        results = list(
            pool.map(web.check_authorization, [header("prometheus", f"bad{i}") for i in range(64)])
        )
        assert web.check_authorization(header("prometheus", "s3cret"))  # from the cache, during the flood
    assert not any(results) and most <= MAX_CONCURRENT_CHECKS


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    openssl = require_binary("openssl", "apt-get install openssl, to make a self-signed certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert)]
    subprocess.run(
        [openssl, *request, "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_tls_from_the_web_config_file(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    cert, _ = certificate
    web = load_web_config(
        web_config_file(tmp_path, "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n")
    )
    with serving(fake_exporter(), web) as url:
        assert url.startswith("https://")
        verified = httpx.get(
            f"{url}/metrics", verify=ssl.create_default_context(cafile=str(cert)), timeout=10
        )
        assert verified.status_code == 200 and "gpu_nvml_available 1.0" in verified.text
        with pytest.raises(httpx.HTTPError):
            httpx.get(url.replace("https://", "http://") + "/metrics", timeout=5)
        with pytest.raises(httpx.ConnectError):  # an unknown certificate is refused by default
            httpx.get(f"{url}/metrics", timeout=5)
        assert httpx.get(
            f"{url}/healthz", verify=ssl.create_default_context(cafile=str(cert)), timeout=10
        ).is_success


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rate_limit: {interval: 1s}\n", "rate_limit not supported by this exporter"),
        ("tls_server_config: {cert_file: c.pem}\n", "needs both cert_file and key_file"),
        ("tls_server_config: {cert: x, key: y}\n", "cert, key not supported"),
        ("tls_server_config: {cert_file: missing.pem, key_file: missing.pem}\n", "cannot load cert_file"),
        ("basic_auth_users: {alice: plaintext}\n", "the entry for 'alice' is not a bcrypt hash"),
        ("basic_auth_users: []\n", "basic_auth_users must be a non-empty mapping"),
        ("[1, 2]\n", "the top level must be a mapping"),
        ("basic_auth_users: {a: [\n", "not valid YAML"),
        ("[" * 100_000 + "]" * 100_000, "not valid YAML: nested too deeply"),  # was a RecursionError
        ('basic_auth_users: {a: "$2b$10$NotEchoedHashNotEchoed}\n', "not valid YAML: found unexpected end"),
    ],
)
def test_bad_web_config_files_are_refused_clearly(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_web_config(web_config_file(tmp_path, text))
    assert message in str(caught.value)
    assert "plaintext" not in str(caught.value)  # a password typed in place of a hash is not echoed
    assert "NotEchoed" not in str(caught.value)  # nor a line PyYAML quotes in its message


def test_tls_options_from_exporter_toolkit(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    web = load_web_config(
        web_config_file(
            tmp_path,
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  min_version: TLS13\n",
        )
    )
    assert web.ssl_context is not None
    assert web.ssl_context.minimum_version == ssl.TLSVersion.TLSv1_3
    with pytest.raises(ConfigError, match="client_auth_type RequireAndVerifyClientCert needs client_ca_file"):
        load_web_config(
            web_config_file(
                tmp_path,
                "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n"
                "  client_auth_type: RequireAndVerifyClientCert\n",
            )
        )


def test_garbage_and_concurrent_scrapes_do_not_disturb_the_server() -> None:
    with serving(fake_exporter()) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            raw.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
            raw.recv(1024)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            bodies = list(pool.map(lambda _: httpx.get(f"{url}/metrics", timeout=20).text, range(16)))
        assert all(
            body.count("# TYPE gpu_up gauge") == 1 and "exporter_build_info" in body for body in bodies
        )


def test_a_client_that_never_finishes_its_tls_handshake_does_not_block_others(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    cert, _ = certificate
    web = load_web_config(
        web_config_file(tmp_path, "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n")
    )
    with serving(fake_exporter(), web) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5):  # connects, says nothing
            context = ssl.create_default_context(cafile=str(cert))
            response = httpx.get(f"{url}/healthz", verify=context, timeout=5)
            assert response.status_code == 200


def test_scrapes_beyond_the_concurrency_cap_get_503_at_once() -> None:
    entered, release = threading.Event(), threading.Event()

    class SlowEngines:  # engines are collected on the scrape, so a slow target holds the scrape
        def collect(self) -> Iterator[object]:
            entered.set()
            release.wait(30)
            yield from ()

        def ready(self) -> bool:
            return True

        def error_counts(self) -> dict[str, int]:
            return {}

        def close(self) -> None:
            pass

    exporter = Exporter({"engines": SlowEngines()})
    web_config = WebConfig()
    server = ExporterServer(make_app(exporter, web_config, max_concurrent_scrapes=1), "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{server.port}"
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            first = pool.submit(httpx.get, f"{url}/metrics", timeout=30)
            assert entered.wait(10)
            second = httpx.get(f"{url}/metrics", timeout=10)
            assert second.status_code == 503 and "too many concurrent scrapes" in second.text
            assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200  # health is not capped
            release.set()
            assert first.result(timeout=30).status_code == 200
        assert httpx.get(f"{url}/metrics", timeout=10).status_code == 200
    finally:
        release.set()
        server.close()
        exporter.close()


def raw_exchange(port: int, request: bytes, timeout: float = 5) -> bytes:
    """Send bytes, read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        raw.sendall(request)
        received = b""
        while chunk := raw.recv(65536):
            received += chunk
    return received


def test_keep_alive_head_and_protocol_errors() -> None:
    import http.client

    with serving(fake_exporter()) as url:
        port = int(url.rsplit(":", 1)[1])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for path in ("/metrics", "/healthz", "/metrics"):  # one connection, as Prometheus keeps it
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
            assert response.status == 200 and response.getheader("Connection") == "keep-alive"
        assert b"gpu_up" in body
        connection.request("HEAD", "/metrics")
        head = connection.getresponse()
        assert head.status == 200 and head.read() == b"" and int(head.getheader("Content-Length")) > 0
        connection.request("POST", "/metrics", body=b"x" * 10)
        assert connection.getresponse().status == 405
        connection.close()

        closed = raw_exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert closed.startswith(b"HTTP/1.1 200 OK") and closed.endswith(b"ok\n")
        old = raw_exchange(port, b"GET /healthz HTTP/1.0\r\n\r\n")  # 1.0 closes unless asked
        assert b"Connection: close" in old
        assert raw_exchange(port, b"GET /metrics\r\n\r\n").startswith(b"HTTP/1.1 400")
        bare_lf = raw_exchange(port, b"GET /healthz HTTP/1.1\nConnection: close\n\n")  # RFC 9112 2.2
        assert bare_lf.startswith(b"HTTP/1.1 200 OK") and bare_lf.endswith(b"ok\n")
        assert raw_exchange(port, b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n").startswith(b"HTTP/1.1 400")
        assert raw_exchange(port, b"GET / HTTP/1.1\r\n folded: header\r\n\r\n").startswith(b"HTTP/1.1 400")
        huge = b"GET / HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n"
        assert raw_exchange(port, huge).startswith(b"HTTP/1.1 431")
        assert httpx.get(f"{url}/metrics", timeout=10).status_code == 200  # still serving


def test_at_the_connection_cap_the_longest_waiting_connection_makes_room() -> None:
    exporter = fake_exporter()
    server = ExporterServer(
        make_app(exporter, WebConfig()), "127.0.0.1", 0, limits=ServerLimits(max_connections=2)
    ).start()
    try:
        oldest = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        time.sleep(0.05)
        newer = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        time.sleep(0.05)
        answer = raw_exchange(server.port, b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 OK")
        assert oldest.recv(1) == b""  # evicted
        newer.sendall(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert newer.recv(65536).startswith(b"HTTP/1.1 200 OK")  # still served
        assert server.closed_by_reason()["evicted"] == 1
        oldest.close()
        newer.close()
    finally:
        server.close()
        exporter.close()
