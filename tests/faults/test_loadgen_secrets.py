"""A credential planted in every way the load generator takes one never comes out of it.

Input paths: URL userinfo on --url, the API key from an environment variable and from a file, a YAML
scenario (URL query token; a YAML error on the secret's own line), an invalid URL around userinfo, the
control API's body (userinfo; an invalid URL; a body that is not an object), the control token, and a
proxy URL with credentials. The server echoes the Authorization header back in its error bodies, as
some gateways do. Outputs searched (plain, percent-encoded, base64): the process's stdout and stderr,
the report JSON and per-request JSONL, /metrics, and every control-API answer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults import checks, stack
from tests.loadgen.conftest import Scripted, start_scripted

SECRET = "pw-planted-8f3a1c"
ECHO = json.dumps({"mock": {"echo_auth": True}})

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scripted(fault_tmp: Path) -> Iterator[Scripted]:
    yield from start_scripted(fault_tmp)


def run(folder: Path, *args: str, env: dict[str, str] | None = None) -> stack.Finished:
    """`loadgen run` to its end, its report and JSONL in `folder`."""
    folder.mkdir(exist_ok=True)
    return stack.run_to_exit(
        folder, "loadgen", "run", "--model", "scripted", "--concurrency", "2", "--requests", "4",
        "--output-len", "2", "--progress", "plain", "--metrics-address", "none",
        "--output-json", str(folder / "report.json"), "--output-jsonl", str(folder / "requests.jsonl"),
        *args, env=env, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("path", ["url_userinfo", "api_key_env", "api_key_file", "yaml_query_token", "proxy"])
def test_a_run_never_shows_the_secret(scripted, fault_tmp, path):
    folder = fault_tmp / f"secret-{path}"  # outputs only: the inputs that hold the secret live beside it
    inputs = fault_tmp / f"inputs-{path}"
    inputs.mkdir()
    (inputs / "key").write_text(SECRET + "\n")
    (inputs / "s.yaml").write_text(f"url: {scripted.url}/v1?token={SECRET}\nextra_body: {ECHO}\n")
    host = scripted.url.removeprefix("http://")
    target = ["--url", scripted.url, "--extra-body", ECHO]
    env = None
    if path == "url_userinfo":
        target = ["--url", f"http://alice:{SECRET}@{host}", "--extra-body", ECHO]
    elif path == "api_key_env":
        target, env = [*target, "--api-key-env", "K"], {"K": SECRET}
    elif path == "api_key_file":
        target = [*target, "--api-key-file", str(inputs / "key")]
    elif path == "yaml_query_token":
        target = ["--scenario", str(inputs / "s.yaml")]
    else:  # a proxy URL with credentials; the scripted server stands in for the proxy
        target = ["--url", "http://proxied.invalid:9", "--proxy-from-env", "--extra-body", ECHO]
        env = {"HTTP_PROXY": f"http://p:{SECRET}@{host}"}
    finished = run(folder, *target, env=env)
    assert finished.returncode == 1, finished.output  # every request was refused (401)
    assert "rejected credentials" in finished.output and "Traceback" not in finished.output
    checks.assert_no_secret(SECRET, paths=[folder], texts=[finished.output])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (f"url: http://u:{SECRET}@127.0.0.1:99999\n", "port 99999 is out of range"),
        (f"url: http://u:{SECRET}@h:1\nconcurrency: [1, 2\n", "is not valid YAML"),  # the secret's line
        (f"url: ftp://u:{SECRET}@h/\n", "scheme 'ftp'"),
    ],
)
def test_configuration_errors_never_show_the_secret(fault_tmp, content, message):
    scenario = fault_tmp / f"config-{abs(hash(content))}.yaml"
    scenario.write_text(content)
    finished = stack.run_to_exit(fault_tmp, "loadgen", "run", "--scenario", str(scenario))
    assert finished.returncode == 2 and message in finished.output, finished.output
    checks.assert_no_secret(SECRET, texts=[finished.output])


def test_the_control_api_never_shows_the_secret(scripted, fault_tmp):
    folder = fault_tmp / "secret-api"
    folder.mkdir()
    env = {"TOKEN": f"tok-{SECRET}"}
    host = scripted.url.removeprefix("http://")
    answers = []
    with stack.loadgen_serve(folder, "--control-token-env", "TOKEN", env=env) as serve:
        auth = {"authorization": f"Bearer tok-{SECRET}"}
        body = {"url": f"http://bob:{SECRET}@{host}", "model": "scripted", "concurrency": 2, "requests": 4,
                "output_len": 2, "extra_body": {"mock": {"echo_auth": True}}}  # fmt: skip
        started = httpx.post(f"{serve.url}/runs", json=body, headers=auth, timeout=30)
        assert started.status_code == 201, started.text
        run_id = started.json()["run_id"]
        deadline = time.monotonic() + 60
        done = httpx.get(f"{serve.url}/runs/{run_id}", headers=auth, timeout=30)
        while done.json()["state"] not in ("finished", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
            done = httpx.get(f"{serve.url}/runs/{run_id}", headers=auth, timeout=30)
        answers += [started.text, done.text, httpx.get(f"{serve.url}/runs", headers=auth, timeout=30).text]
        assert "rejected credentials" in done.text and done.json()["report"]["failure"]
        bad_port = httpx.post(f"{serve.url}/runs", json={**body, "url": f"http://bob:{SECRET}@{host}0000"},
                              headers=auth, timeout=30)  # fmt: skip
        not_object = httpx.post(
            f"{serve.url}/runs", json=[f"http://bob:{SECRET}@h"], headers=auth, timeout=30
        )
        wrong_token = httpx.get(
            f"{serve.url}/runs", headers={"authorization": f"Bearer {SECRET}"}, timeout=30
        )
        assert (bad_port.status_code, not_object.status_code, wrong_token.status_code) == (400, 422, 401)
        answers += [bad_port.text, not_object.text, wrong_token.text]
        checks.assert_alive(serve)
        checks.assert_no_secret(SECRET, procs=[serve], urls=[serve.metrics_url], texts=answers)


def test_a_flood_of_urls_on_the_control_api_cannot_unmask_the_api_key(scripted, fault_tmp):
    # Every POST /runs registers its URL's pieces to be scrubbed, refused ones too. The registry keeps the
    # latest 1,024: 1,100 refused posts once pushed the API key out, and the report of the run going on
    # then showed the key the server echoed back.
    folder = fault_tmp / "secret-flood"
    folder.mkdir()
    env = {"KEY": f"sk-{SECRET}"}
    with stack.loadgen_serve(folder, "--api-key-env", "KEY", "--allow-url", scripted.url, env=env) as serve:
        body = {"url": scripted.url, "model": "scripted", "rate": "20", "soak": True, "output_len": 2,
                "extra_body": {"mock": {"echo_auth": True}}}  # fmt: skip
        started = httpx.post(f"{serve.url}/runs", json=body, timeout=30)
        assert started.status_code == 201, started.text
        run_id = started.json()["run_id"]
        with httpx.Client(timeout=30) as client:
            for i in range(1100):
                refused = client.post(
                    f"{serve.url}/runs", json={"url": f"http://evil.example/?q=junk{i:05d}"}
                )
                assert refused.status_code == 403
        httpx.post(f"{serve.url}/runs/{run_id}/stop", timeout=30)
        deadline = time.monotonic() + 60
        done = httpx.get(f"{serve.url}/runs/{run_id}", timeout=30)
        while done.json()["state"] not in ("finished", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
            done = httpx.get(f"{serve.url}/runs/{run_id}", timeout=30)
        assert "rejected credentials" in done.text
        checks.assert_alive(serve)
        checks.assert_no_secret(SECRET, procs=[serve], urls=[serve.metrics_url], texts=[done.text])
