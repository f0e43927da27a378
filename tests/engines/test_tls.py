"""HTTPS engines with a private CA and client certificates, against a real local TLS server.

A CA, a server certificate for `engine.test` (and 127.0.0.1) and a client certificate are made with the
openssl command line for each test session; the engine is Python's own TLS server on loopback.
"""

from __future__ import annotations

import contextlib
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from exporter.config import Config, ConfigError, TargetConfig, load_config
from exporter.engines.collector import EnginesCollector
from tests.engines.conftest import FIXTURES, scrape, value
from tests.support.real import require_binary

PAYLOAD = (FIXTURES / "vllm" / "v0.33.0-load.txt").read_bytes()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """ca.pem, server.pem/.key (engine.test, IP 127.0.0.1), client.pem/.key, other-ca.pem."""
    openssl = require_binary("openssl", "apt-get install openssl, to make test certificates")
    d = tmp_path_factory.mktemp("pki")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=d, check=True, capture_output=True, timeout=60)

    for ca in ("ca", "other-ca"):
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={ca}",
            "-keyout", f"{ca}.key", "-out", f"{ca}.pem")  # fmt: skip
    for name, extension in (
        ("server", "subjectAltName=DNS:engine.test\nextendedKeyUsage=serverAuth"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        (d / f"{name}.ext").write_text(extension + "\n")
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
            "-out", f"{name}.csr")  # fmt: skip
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "1", "-extfile", f"{name}.ext", "-out", f"{name}.pem")  # fmt: skip
    return {p.stem + p.suffix: p for p in d.iterdir()}


@contextlib.contextmanager
def https_engine(pki: dict[str, Path], require_client_cert: bool) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = PAYLOAD if self.path == "/metrics" else b"not found\n"
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki["server.pem"], pki["server.key"])
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(pki["ca.pem"])
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def outcomes(*targets: TargetConfig) -> dict[str, str]:
    """target -> "up", or the error kind it counted."""
    collector = EnginesCollector(Config(targets=targets))
    try:
        exposition = scrape(collector)
    finally:
        collector.close()
    result = {}
    for target in targets:
        if value(exposition, "llm_target_up", target=target.name) == 1:
            result[target.name] = "up"
        else:
            counted = exposition.samples("llm_target_errors_total")
            result[target.name] = next(
                s.labels["kind"] for s in counted if s.labels["target"] == target.name and s.value
            )
    return result


def test_a_private_ca_and_the_server_name(pki: dict[str, Path]) -> None:
    ca = str(pki["ca.pem"])
    with https_engine(pki, require_client_cert=False) as url:
        assert outcomes(
            TargetConfig("private_ca", url, kind="vllm", ca_file=ca, server_name="engine.test"),
            TargetConfig("default_cas", url, kind="vllm", server_name="engine.test"),
            TargetConfig(
                "wrong_ca", url, kind="vllm", ca_file=str(pki["other-ca.pem"]), server_name="engine.test"
            ),
            TargetConfig(
                "wrong_name", url, kind="vllm", ca_file=ca
            ),  # the certificate names engine.test only
            TargetConfig("insecure", url, kind="vllm", insecure_skip_verify=True),
        ) == {
            "private_ca": "up",
            "default_cas": "tls",
            "wrong_ca": "tls",
            "wrong_name": "tls",
            "insecure": "up",
        }


def test_a_client_certificate(pki: dict[str, Path]) -> None:
    tls = {"ca_file": str(pki["ca.pem"]), "server_name": "engine.test"}
    with https_engine(pki, require_client_cert=True) as url:
        result = outcomes(
            TargetConfig(
                "with_cert",
                url,
                kind="vllm",
                cert_file=str(pki["client.pem"]),
                key_file=str(pki["client.key"]),
                **tls,
            ),
            TargetConfig("without_cert", url, kind="vllm", **tls),
        )
    assert result["with_cert"] == "up"
    # With TLS 1.3 the client learns of a missing certificate only when it reads the answer: from an alert
    # (tls), or, as from Python's own server, from the connection being reset (connect).
    assert result["without_cert"] in ("tls", "connect")


def test_tls_options_in_every_spelling_and_checked_at_start(pki: dict[str, Path], tmp_path: Path) -> None:
    ca, cert, key = (str(pki[name]) for name in ("ca.pem", "client.pem", "client.key"))
    spec = f"e=https://127.0.0.1:1,ca_file={ca},cert_file={cert},key_file={key},server_name=engine.test"
    [from_flag] = load_config(["--target", spec], {}).targets
    [from_env] = load_config([], {"EXPORTER_TARGET": spec}).targets
    config_file = tmp_path / "exporter.yaml"
    config_file.write_text(
        f"targets: [{{name: e, url: 'https://127.0.0.1:1', ca_file: {ca}, cert_file: {cert}, key_file: {key},"
        " server_name: engine.test}]\n"
    )
    [from_file] = load_config(["--config", str(config_file)], {}).targets
    assert from_flag == from_env == from_file
    assert (from_flag.ca_file, from_flag.cert_file, from_flag.key_file) == (ca, cert, key)
    insecure = load_config(["--target", "i=https://h,insecure_skip_verify=true"], {}).targets[0]
    assert insecure.insecure_skip_verify is True
    for spec, message in [
        (f"e=https://h,ca_file={key}", "TLS files cannot be used"),  # a key is no CA
        (f"e=https://h,cert_file={ca}", "TLS files cannot be used"),  # a certificate without its key
        (f"e=https://h,key_file={key}", "key_file needs cert_file"),
        (f"e=https://h,ca_file={tmp_path}/missing.pem", "ca_file"),
        (f"e=http://h,ca_file={ca}", "its url is not https://"),
        ("e=https://h,insecure_skip_verify=maybe", "insecure_skip_verify: 'maybe' is not a boolean"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_config(["--target", spec], {})
