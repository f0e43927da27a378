"""No credential in any message, log line or label: one function (exporter/redact.py) that every path uses,
tested by planting a password in every configuration input. Engine-side paths (error messages, log lines
and labels of a running exporter) are in tests/engines/test_hostile_targets.py."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.collectors.process_labels import command_label
from exporter.config import ConfigError, load_config
from exporter.redact import RedactingFormatter, redact

SECRET = "hunter2"
URL = f"http://admin:{SECRET}@engine.local"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"{URL}:8000/metrics", "http://<redacted>@engine.local:8000/metrics"),
        ("https://u:p@ss@host/x", "https://<redacted>@host/x"),  # an unescaped @ in the password
        (f"'{URL}:99999' has an invalid port", "'http://<redacted>@engine.local:99999' has an invalid port"),
        ("http://host/a@b and user@example.com", "http://host/a@b and user@example.com"),
        ("GET /metrics?api_key=s3cr3t&x=1", "GET /metrics?api_key=<redacted>&x=1"),
        ("--hf-token=abc password=pw", "--hf-token=<redacted> password=<redacted>"),
        ("Authorization: Bearer abc.def-ghi", "Authorization: Bearer <redacted>"),
        ("auth_header_env=ENGINE_AUTH", "auth_header_env=ENGINE_AUTH"),  # a variable's name, not a secret
        ("qwen3:32b engine=0 le=0.5", "qwen3:32b engine=0 le=0.5"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_process_labels_hide_option_values_and_url_userinfo() -> None:
    label = command_label(["/usr/bin/vllm", "serve", "--api-key", SECRET, f"--hf-token={SECRET}", URL])
    assert SECRET not in label and label.count("<redacted>") == 3


@pytest.mark.parametrize(
    ("argv", "env", "yaml"),
    [
        (["--target", f"a={URL}:99999"], {}, None),  # bad port
        (["--target", f"a={URL},colour=red"], {}, None),  # unknown --target item
        (["--target", f"a={URL},kind=llama"], {}, None),  # unknown kind
        (["--target", f"a={URL},timeout_seconds=soon"], {}, None),
        (["--target", f"bad name={URL}"], {}, None),
        (["--target", f"{URL}"], {}, None),  # not NAME=URL at all
        ([], {"EXPORTER_TARGET": f"a={URL}:99999;b=http://h"}, None),  # the environment form
        ([], {"EXPORTER_TARGET": f"a={URL},colour=red"}, None),
        ([], {}, f"targets: [{{name: a, url: '{URL}:99999'}}]\n"),  # the YAML form
        ([], {}, f"targets: [{{name: a, url: '{URL}', colour: red}}]\n"),
        ([], {}, f"targets: ['{URL}']\n"),
        ([], {}, f"targets: [{{name: a, url: 'ftp://admin:{SECRET}@h'}}]\n"),
        (["--listen-address", f"{URL}:x"], {}, None),
    ],
)
def test_no_configuration_error_shows_a_password(
    tmp_path: Path, argv: list[str], env: dict[str, str], yaml: str | None
) -> None:
    if yaml is not None:
        (tmp_path / "exporter.yaml").write_text(yaml)
        argv = [*argv, "--config", str(tmp_path / "exporter.yaml")]
    with pytest.raises(ConfigError) as caught:
        load_config(argv, env)
    assert SECRET not in str(caught.value)
    assert "<redacted>" in str(caught.value) or "admin" not in str(caught.value)


def test_the_command_line_error_shows_no_password() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--target", f"a={URL}:99999,colour=red"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "configuration error" in result.stderr
    assert SECRET not in result.stderr + result.stdout


def test_every_log_line_goes_through_redact() -> None:
    formatter = RedactingFormatter("%(levelname)s %(message)s")
    try:
        raise RuntimeError(f"cannot reach {URL}")
    except RuntimeError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "target %s failed", (URL,), sys.exc_info()
        )
    line = formatter.format(record)
    assert SECRET not in line and "Traceback" in line and line.count("<redacted>") >= 2
