"""Base URLs: invalid ones are refused with the reason; --allow-url compares URLs as servers read them."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from loadgen.errors import ScenarioError
from loadgen.scenario import Scenario
from loadgen.urls import check_url, normalize, under
from tests.support.procs import free_port, running


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "--url is required"),
        ("ftp://h/x", "scheme 'ftp': use http:// or https://"),
        ("127.0.0.1:8000", "no scheme: use http:// or https://"),
        ("http://h:70000/", "port 70000 is out of range"),
        ("http://h:65536", "port 65536 is out of range"),
        ("http://h:0", "port 0 is out of range"),
        ("http://h:80a/", "port '80a' is not a number"),
        ("http://h:８０/", "port '８０' is not a number"),  # isdigit() took it; urlsplit raised ValueError
        ("http:///v1", "has no host"),
        ("http://h /v1", "spaces or control characters"),
        ("http://user:pw-secret@h:99999/", r"http://<redacted>@h:99999/.*port 99999"),
    ],
)
def test_an_invalid_url_is_refused_with_what_is_wrong(url, message):
    with pytest.raises(ScenarioError, match=message) as caught:
        Scenario.build(None, {"url": url})
    assert "pw-secret" not in str(caught.value)


def test_valid_urls_pass_unchanged():
    for url in (
        "http://127.0.0.1:8000",
        "https://gw.example/api/v1?key=k",
        "http://[::1]:65535/",
        "http://h:1",
    ):
        assert check_url(url) == url


@pytest.mark.parametrize(
    ("url", "normalized"),
    [
        ("HTTP://Gw.Example:80/a/./b/../c/", "http://gw.example/a/c/"),
        ("https://h:443/%7Euser/%2e%2E/x", "https://h/x"),
        ("http://h:8080/ok/.%2e/other", "http://h:8080/other"),
        ("http://h/%41%3a?q=1", "http://h/A%3A?q=1"),
        ("http://h", "http://h/"),
        ("http://h/../../etc", "http://h/etc"),
    ],
)
def test_normalization(url, normalized):
    assert normalize(url) == normalized


@pytest.mark.parametrize(
    "url",
    [
        "http://h/ok%2F..%2Fother",
        "http://h/ok/..%5Cother",
        "http://h/ok\\..\\x",
        "http://h/ok/..;/other",  # Tomcat's '..;' is '..': the key would go to /other
        "http://h/ok/%2e%2E;x=1/other",
        "http://h/ok/.;/x",
    ],
)
def test_what_cannot_be_normalized_is_refused(url):
    with pytest.raises(ScenarioError, match="refused"):
        normalize(url)
    assert not under(url, "http://h/ok")


def test_under_compares_normalized_urls():
    allowed = "http://h:8000/ok"
    for url in ("http://h:8000/ok", "http://H:8000/ok/v1", "http://h:8000/ok/sub/..", "http://h:8000/ok/./x"):
        assert under(url, allowed), url
    for url in (
        "http://h:8000/ok/../other", "http://h:8000/ok/%2e%2e/other", "http://h:8000/okx",
        "https://h:8000/ok", "http://h:8001/ok", "http://h.evil:8000/ok", "http://h:8000/",
    ):  # fmt: skip
        assert not under(url, allowed), url
    assert under("http://h/x", "http://h:80/") and under("https://h:443/x", "https://h/")


def test_serve_refuses_dot_segments_out_of_an_allowed_path(scripted, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        sys.executable, "-m", "loadgen", "serve", "--listen-address", f"127.0.0.1:{port}",
        "--api-key-env", "TEST_TARGET_KEY", "--allow-url", f"{scripted.url}/ok",
    ]  # fmt: skip
    with running(argv, f"{url}/healthz", tmp_path / "serve.log", env={"TEST_TARGET_KEY": "sk-dots-1234"}):

        def post(target: str) -> httpx.Response:
            scenario = {"url": target, "model": "m", "concurrency": 1, "requests": 1, "output_len": 2}
            return httpx.post(f"{url}/runs", json=scenario, timeout=10)

        for escape in ("/ok/../other", "/ok/%2e%2e/other", "/ok/.%2E/other", "/ok%2F..%2Fother", "/OK"):
            answer = post(scripted.url + escape)
            assert answer.status_code == 403, (escape, answer.text)
        host, _, port_text = scripted.url.removeprefix("http://").partition(":")
        wide_port = port_text.translate({ord(d): ord(d) + 0xFEE0 for d in "0123456789"})  # '８０'
        for elsewhere in (
            f"{scripted.url}/ok/..;/other",  # '..' to Tomcat and Jetty
            f"http://{host}:{wide_port}/ok",  # once a 500 (ValueError past check_url)
            f"http://{host}:{port_text}@evil.example/ok",  # the host is evil.example
            f"http://{host}.:{port_text}/ok",
            f"http://[::ffff:{host}]:{port_text}/ok",
            f"HTTPS://{host}:{port_text}/ok",
        ):
            answer = post(elsewhere)
            assert answer.status_code == 403, (elsewhere, answer.text)
        started = post(scripted.url + "/ok/sub/..")  # normalizes to /ok/: allowed, and sent there
        assert started.status_code == 201, started.text
        run_id = started.json()["run_id"]
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/runs/{run_id}", timeout=10).json()["state"] not in ("finished", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
    paths = {record["path"] for record in scripted.records(run_id).values()}
    assert paths == {"/ok/v1/chat/completions"}


def test_allow_url_that_cannot_be_normalized_stops_serve():
    result = subprocess.run(
        [sys.executable, "-m", "loadgen", "serve", "--allow-url", "http://h/a%2Fb", "--listen-address",
         "127.0.0.1:0"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2 and "--allow-url" in result.stderr and "refused" in result.stderr
