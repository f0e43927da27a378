"""Configuration: YAML file < EXPORTER_* environment < flags, and a clear message for every bad input."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from exporter.config import (
    CONFIG_FILE,
    SETTINGS,
    Config,
    ConfigError,
    EngineProcessPattern,
    TargetConfig,
    default_of,
    load_config,
)


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "exporter.yaml"
    path.write_text(text)
    return str(path)


def test_defaults() -> None:
    config = load_config([], {})
    assert config == Config()
    assert config.listen_address == "0.0.0.0:9840"
    assert config.listen_host_port == ("0.0.0.0", 9840)
    assert config.collector_gpu and config.collector_host
    assert config.targets == () and config.engine_passthrough is False


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    config_file = write(
        tmp_path,
        """
listen_address: 127.0.0.1:1111
collector_gpu: false
gpu_sampler_interval_seconds: 2.5
collect_interval_seconds: 0.5
log_level: debug
targets:
  - {name: a, url: "http://127.0.0.1:8000", kind: vllm, model: qwen, timeout_seconds: 8}
  - {name: b, url: "http://127.0.0.1:8001", process: "text-generation-launcher --port 8001"}
engine_process_patterns:
  - {engine_kind: custom, pattern: "serve\\\\.py"}
""",
    )
    from_file = load_config(["--config", config_file], {})
    assert from_file.listen_address == "127.0.0.1:1111"
    assert from_file.collector_gpu is False
    assert from_file.gpu_sampler_interval_seconds == 2.5
    assert from_file.collect_interval_seconds == 0.5
    assert from_file.log_level == "debug"
    assert from_file.targets == (
        TargetConfig("a", "http://127.0.0.1:8000", kind="vllm", model="qwen", timeout_seconds=8.0),
        TargetConfig("b", "http://127.0.0.1:8001", process="text-generation-launcher --port 8001"),
    )
    assert from_file.engine_process_patterns == (EngineProcessPattern("custom", r"serve\.py"),)

    env = {
        "EXPORTER_CONFIG": config_file,
        "EXPORTER_LISTEN_ADDRESS": "127.0.0.1:2222",
        "EXPORTER_COLLECTOR_GPU": "yes",
        "EXPORTER_TARGET": "c=http://127.0.0.1:9000,kind=sglang; d=https://engine.local/v1",
        "EXPORTER_ENGINE_PASSTHROUGH": "1",
    }
    from_env = load_config([], env)
    assert from_env.listen_address == "127.0.0.1:2222"
    assert from_env.collector_gpu is True
    assert from_env.engine_passthrough is True
    assert from_env.gpu_sampler_interval_seconds == 2.5  # still from the file
    assert load_config(["--collect-interval-seconds", "0.25"], env).collect_interval_seconds == 0.25
    assert [t.name for t in from_env.targets] == ["c", "d"]  # the environment replaces the file's list
    assert from_env.targets[0].kind == "sglang"

    flags = [
        "--listen-address",
        "127.0.0.1:3333",
        "--no-collector.gpu",
        "--no-engine-passthrough",
        "--target",
        "e=http://127.0.0.1:7000,model=m,auth_header_env=ENGINE_AUTH,timeout_seconds=0.5",
        "--target",
        "f=http://[::1]:7001,process=^llama-server .*--port 7001",
    ]
    from_flags = load_config(flags, {**env, "ENGINE_AUTH": "Bearer x"})
    assert from_flags.listen_address == "127.0.0.1:3333"
    assert from_flags.collector_gpu is False
    assert from_flags.engine_passthrough is False
    assert from_flags.targets == (
        TargetConfig(
            "e", "http://127.0.0.1:7000", model="m", auth_header_env="ENGINE_AUTH", timeout_seconds=0.5
        ),
        TargetConfig("f", "http://[::1]:7001", process="^llama-server .*--port 7001"),
    )


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--listen-address", "9840"], {}, "flag --listen-address: '9840' is not HOST:PORT"),
        (["--listen-address", "h:70000"], {}, "port 0-65535"),
        (
            [],
            {"EXPORTER_LISTEN_ADDRESS": "h:x"},
            "environment EXPORTER_LISTEN_ADDRESS: 'h:x' is not HOST:PORT",
        ),
        ([], {"EXPORTER_COLLECTOR_GPU": "maybe"}, "EXPORTER_COLLECTOR_GPU: 'maybe' is not a boolean"),
        (["--target", "no-url"], {}, "flag --target: 'no-url' is not NAME=URL"),
        (["--target", "a=ftp://h/"], {}, "url 'ftp://h/' must be http(s)://HOST"),
        (["--target", "a=http://"], {}, "must be http(s)://HOST"),
        (["--target", "a=http://h:99999"], {}, "invalid port"),
        (["--target", "a=http://h:８０"], {}, "invalid port"),  # digits, but not ASCII ones
        (["--target", "a=http://[::1/metrics"], {}, "is not a URL (Invalid IPv6 URL)"),  # was a traceback
        (["--target", "a=http://[zz]/metrics"], {}, "is not a URL"),
        (["--target", "a=http://ho st/metrics"], {}, "contains spaces or control characters"),
        (["--target", "a=http://h/\x00/metrics"], {}, "contains spaces or control characters"),
        (["--kubernetes.api-url", "http://[::1"], {}, "is not a URL"),
        (["--target", "bad name=http://h"], {}, "target name 'bad name' must be"),
        (["--target", "a=http://h,kind=llama"], {}, "kind 'llama' is not one of vllm, sglang"),
        (["--target", "a=http://h,colour=red"], {}, "item 'colour=red'"),
        (["--target", "a=http://h,timeout_seconds=-1"], {}, "timeout_seconds: -1.0 is outside"),
        (["--target", "a=http://h,timeout_seconds=soon"], {}, "timeout_seconds: 'soon' is not a number"),
        (
            ["--target", "a=http://h,timeout_seconds=9"],
            {},
            "timeout_seconds: 9 s is more than 8 s; engines are read while Prometheus scrapes the exporter",
        ),
        (["--target", "a=http://h,auth_header_env=1X"], {}, "auth_header_env '1X' is not a variable name"),
        (["--target", "a=http://h,process=vllm(serve"], {}, "process 'vllm(serve' is not a valid regular"),
        (
            ["--target", "a=http://h,auth_header_env=NOT_SET_ANYWHERE"],
            {},
            "$NOT_SET_ANYWHERE, which is not set",
        ),
        (["--target", "a=http://h", "--target", "a=http://g"], {}, "target name(s) used twice: a"),
        (
            ["--web-config-file", "/nonexistent/web.yml"],
            {},
            "web config file '/nonexistent/web.yml' does not exist",
        ),
        (["--engine-process-pattern", "x=("], {}, "is not a valid regular expression"),
        (["--engine-process-pattern", "Bad Kind=x"], {}, "is not KIND=REGEX"),
        (
            ["--gpu.sampler-interval-seconds", "0.01"],
            {},
            "flag --gpu.sampler-interval-seconds: 0.01 is outside 0.2..3600",
        ),
        (["--gpu.process-limit", "2.5"], {}, "flag --gpu.process-limit: '2.5' is not an integer"),
        (
            ["--collect-interval-seconds", "0.05"],
            {},
            "flag --collect-interval-seconds: 0.05 is outside 0.1..3600",
        ),
        (
            [],
            {"EXPORTER_COLLECT_INTERVAL_SECONDS": "often"},
            "EXPORTER_COLLECT_INTERVAL_SECONDS: 'often' is not",
        ),
        ([], {"EXPORTER_NVML_RETRY_SECONDS": "0"}, "EXPORTER_NVML_RETRY_SECONDS: 0.0 is outside"),
        ([], {"EXPORTER_LOG_LEVEL": "loud"}, "'loud' is not one of debug, info, warning, error"),
        (["--config", "/nonexistent/exporter.yaml"], {}, "cannot read the config file"),
    ],
)
def test_every_bad_value_names_its_setting_and_source(
    argv: list[str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(argv, env)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("listen_address: [1, 2\n", "not valid YAML"),
        ("[" * 100_000 + "]" * 100_000, "not valid YAML: nested too deeply"),  # was a RecursionError
        ('targets: [{name: a, url: "http://h/?x=hunter2-quoted}]\n', "not valid YAML: found unexpected end"),
        ("- a\n- b\n", "the top level must be a mapping of settings, got list"),
        ("listen_adress: 1.2.3.4:1\n", "unknown setting(s) listen_adress; known: listen_address"),
        ("targets: {name: a}\n", "targets must be a list"),
        ("targets: [a]\n", "targets[0]: expected a mapping"),
        ("targets: [{name: a, url: 'http://h', colour: red}]\n", "targets[0]: unknown key(s) colour"),
        ("targets: [{url: 'http://h'}]\n", "target name '' must be"),
        ("collector_host: 3\n", "collector_host: 3 is not a boolean"),
        ("gpu_process_limit: true\n", "gpu_process_limit: True is not a number"),
        ("collect_interval_seconds: 7200\n", "collect_interval_seconds: 7200.0 is outside 0.1..3600"),
        ("targets: [{name: a, url: 'http://h', timeout_seconds: 30}]\n", "scrape_timeout (10 s in"),
    ],
)
def test_bad_files_name_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(["--config", path], {})
    assert message in str(caught.value)
    assert path in str(caught.value)
    assert "hunter2" not in str(caught.value)  # PyYAML's message quotes the line: never shown


def test_an_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(["--config", write(tmp_path, "")], {}) == Config()


def test_the_command_line_exits_2_with_the_message_and_no_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--listen-address", "nowhere"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "configuration error: flag --listen-address: 'nowhere' is not HOST:PORT" in result.stderr
    assert "Traceback" not in result.stderr
    unknown = subprocess.run(
        [sys.executable, "-m", "exporter", "--colour"], capture_output=True, text=True, timeout=60
    )
    assert unknown.returncode == 2 and "unrecognized arguments: --colour" in unknown.stderr


def test_help_lists_every_flag() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    for flag in (
        "--config",
        "--listen-address",
        "--web-config-file",
        "--collector.gpu",
        "--no-collector.gpu",
        "--collector.host",
        "--target",
        "--engine-passthrough",
        "--engine-process-pattern",
    ):
        assert flag in result.stdout


def readme_settings_rows() -> list[tuple[str, ...]]:
    readme = (Path(__file__).resolve().parents[2] / "exporter" / "README.md").read_text()
    section = readme.split("\n## Configuration\n")[1]
    table = section[section.index("\n| flag |") :].split("\n\n")[0].strip().splitlines()
    return [tuple(cell.strip() for cell in line.strip("|").split("|")) for line in table[2:]]


def test_the_readme_settings_table_is_the_settings_table() -> None:
    """exporter/README.md's flag/environment/YAML/default table equals config.SETTINGS, row for row."""
    expected = [setting.readme_row(default_of(setting)) for setting in (CONFIG_FILE, *SETTINGS)]
    assert readme_settings_rows() == expected


def test_every_config_field_is_one_setting() -> None:
    assert [s.key for s in SETTINGS] == [f.name for f in fields(Config)]
    assert len({s.env for s in (CONFIG_FILE, *SETTINGS)}) == len(SETTINGS) + 1
