"""Exporter configuration: YAML file, EXPORTER_* environment variables and flags, in that order of strength.

Every setting has one name in three spellings: the flag `--listen-address` / `--collector.gpu`, the YAML
key `listen_address` / `collector_gpu`, the variable `EXPORTER_LISTEN_ADDRESS` / `EXPORTER_COLLECTOR_GPU`.
Precedence: flags > environment > file > defaults. Everything is validated before the exporter starts;
a problem raises ConfigError with a message that names the setting, the source and what is accepted.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

ENV_PREFIX = "EXPORTER_"
DEFAULT_LISTEN_ADDRESS = "0.0.0.0:9840"

# engine_kind values of docs/metrics.md
ENGINE_KINDS = (
    "vllm",
    "sglang",
    "tgi",
    "llamacpp",
    "lmdeploy",
    "xinference",
    "ollama",
    "triton_trtllm",
    "trtllm_serve",
    "nim",
)

# A target's scrape runs while Prometheus scrapes the exporter (scrape_timeout 10 s in
# prometheus/prometheus.yml): its deadline, plus the collector's margin, must stay well inside that.
MAX_TARGET_TIMEOUT_SECONDS = 8.0
_TARGET_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TARGET_KEYS = ("name", "url", "kind", "model", "auth_header_env", "timeout_seconds", "process")


class ConfigError(ValueError):
    """A setting is missing, malformed or out of range; the message says which and why."""


@dataclass(frozen=True)
class TargetConfig:
    name: str
    url: str
    kind: str | None = None
    model: str | None = None
    auth_header_env: str | None = None
    timeout_seconds: float = 2.0
    process: str | None = None  # regex searched in the engine's command line, for the GPU join


@dataclass(frozen=True)
class EngineProcessPattern:
    """A configured engine recogniser: a regular expression searched in a process's command line."""

    engine_kind: str
    pattern: str


@dataclass(frozen=True)
class Config:
    listen_address: str = DEFAULT_LISTEN_ADDRESS
    web_config_file: Path | None = None
    collector_gpu: bool = True
    collector_host: bool = True
    targets: tuple[TargetConfig, ...] = ()
    engine_passthrough: bool = False
    engine_process_patterns: tuple[EngineProcessPattern, ...] = ()
    collect_interval_seconds: float = 0.5
    gpu_sampler_interval_seconds: float = 1.0
    gpu_process_limit: int = 32
    host_engine_process_limit: int = 16
    nvml_retry_seconds: float = 30.0
    log_level: str = "info"

    @property
    def listen_host_port(self) -> tuple[str, int]:
        return split_listen_address(self.listen_address)


_FIELD_NAMES = tuple(f.name for f in fields(Config))
_LOG_LEVELS = ("debug", "info", "warning", "error")


# ---------------------------------------------------------------------------------------------------------
# Parsing single values. `where` names the source, e.g. "flag --listen-address" or "config.yaml: targets[0]".


def split_listen_address(value: str, where: str = "listen_address") -> tuple[str, int]:
    host, sep, port_text = str(value).rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"{where}: {value!r} is not HOST:PORT with a port 0-65535 (e.g. 0.0.0.0:9840)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", int(port_text)


def parse_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{where}: {value!r} is not a boolean (use true/false, yes/no, 1/0, on/off)")


def parse_number(value: Any, where: str, minimum: float, maximum: float, integer: bool = False) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: {value!r} is not a number")
    try:
        number = int(value) if integer else float(value)
    except (TypeError, ValueError):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{where}: {value!r} is not {kind}") from None
    if not minimum <= number <= maximum:
        raise ConfigError(f"{where}: {number} is outside {minimum}..{maximum}")
    return number


def parse_target_spec(spec: str, where: str) -> dict[str, str]:
    """`NAME=URL[,kind=KIND][,model=MODEL][,auth_header_env=VAR][,timeout_seconds=S][,process=REGEX]` -> a
    mapping (a regex with a comma needs the YAML form)."""
    head, *items = str(spec).split(",")
    name, sep, url = head.partition("=")
    if not sep:
        raise ConfigError(f"{where}: {spec!r} is not NAME=URL[,kind=KIND,model=MODEL,auth_header_env=VAR]")
    result = {"name": name.strip(), "url": url.strip()}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in _TARGET_KEYS[2:]:
            raise ConfigError(
                f"{where}: item {item!r} in {spec!r} is not KEY=VALUE "
                f"with KEY one of {', '.join(_TARGET_KEYS[2:])}"
            )
        result[key] = value.strip()
    return result


def parse_target(raw: Any, where: str, environ: Mapping[str, str]) -> TargetConfig:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping with keys {', '.join(_TARGET_KEYS)}, got {raw!r}")
    unknown = sorted(set(map(str, raw)) - set(_TARGET_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(_TARGET_KEYS)}")
    name = str(raw.get("name") or "")
    if not _TARGET_NAME.match(name):
        raise ConfigError(f"{where}: target name {name!r} must be 1-64 characters of A-Z a-z 0-9 _ . -")
    url = str(raw.get("url") or "")
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(f"{where}: target {name!r} url {url!r} must be http(s)://HOST[:PORT][/path]")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ConfigError(f"{where}: target {name!r} url {url!r} has an invalid port") from None
    kind = raw.get("kind") or None
    if kind is not None and kind not in ENGINE_KINDS:
        raise ConfigError(f"{where}: target {name!r} kind {kind!r} is not one of {', '.join(ENGINE_KINDS)}")
    auth_env = raw.get("auth_header_env") or None
    if auth_env is not None:
        if not _ENV_NAME.match(str(auth_env)):
            raise ConfigError(f"{where}: target {name!r} auth_header_env {auth_env!r} is not a variable name")
        if auth_env not in environ:
            raise ConfigError(
                f"{where}: target {name!r} reads its Authorization header from ${auth_env}, which is not set"
            )
    timeout_where = f"{where}: target {name!r} timeout_seconds"
    timeout = parse_number(raw.get("timeout_seconds", 2.0), timeout_where, 0.05, float("inf"))
    if timeout > MAX_TARGET_TIMEOUT_SECONDS:
        raise ConfigError(
            f"{timeout_where}: {timeout:g} s is more than {MAX_TARGET_TIMEOUT_SECONDS:g} s; engines are read "
            "while Prometheus scrapes the exporter, so the whole engines round must end well within "
            "Prometheus's scrape_timeout (10 s in prometheus/prometheus.yml)"
        )
    process = raw.get("process") or None
    if process is not None:
        try:
            re.compile(str(process))
        except re.error as exc:
            raise ConfigError(
                f"{where}: target {name!r} process {process!r} is not a valid regular expression: {exc}"
            ) from None
    model = raw.get("model")
    return TargetConfig(
        name=name,
        url=url,
        kind=kind,
        model=None if model in (None, "") else str(model),
        auth_header_env=auth_env,
        timeout_seconds=timeout,
        process=None if process is None else str(process),
    )


def parse_engine_pattern(raw: Any, where: str) -> EngineProcessPattern:
    """`KIND=REGEX` (flag, env) or {engine_kind: KIND, pattern: REGEX} (YAML)."""
    if isinstance(raw, Mapping):
        kind, pattern = str(raw.get("engine_kind") or ""), str(raw.get("pattern") or "")
    else:
        kind, _, pattern = str(raw).partition("=")
    if not re.match(r"^[a-z0-9_]{1,32}$", kind) or not pattern:
        raise ConfigError(
            f"{where}: {raw!r} is not KIND=REGEX with KIND of a-z 0-9 _ (e.g. myengine=my_server)"
        )
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"{where}: {pattern!r} is not a valid regular expression: {exc}") from None
    return EngineProcessPattern(kind, pattern)


# ---------------------------------------------------------------------------------------------------------
# The three sources, each turned into {field name: raw value}, then merged and validated once.


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmobs-exporter",
        description="Prometheus exporter for LLM serving: GPU (NVML), host (psutil) and engine metrics.",
        epilog="Every flag can also be set as EXPORTER_<NAME> (e.g. EXPORTER_LISTEN_ADDRESS, "
        "EXPORTER_COLLECTOR_GPU=false, EXPORTER_TARGET='a=http://h:8000;b=http://h:8001') or as the YAML key "
        "<name> (listen_address, collector_gpu, targets: [{name, url, kind, ...}]). "
        "Precedence: flags > environment > file > defaults.",
        argument_default=argparse.SUPPRESS,
    )
    add = parser.add_argument
    add("--config", metavar="FILE", help="YAML configuration file")
    add(
        "--listen-address",
        metavar="HOST:PORT",
        help=f"address to serve on (default {DEFAULT_LISTEN_ADDRESS})",
    )
    add("--web-config-file", metavar="FILE", help="exporter-toolkit web config: TLS and basic auth")
    add("--collector.gpu", dest="collector_gpu", action=argparse.BooleanOptionalAction, help="NVML collector")
    add(
        "--collector.host",
        dest="collector_host",
        action=argparse.BooleanOptionalAction,
        help="psutil collector",
    )
    add(
        "--target",
        dest="targets",
        action="append",
        metavar="NAME=URL[,kind=K,model=M,auth_header_env=VAR,timeout_seconds=S,process=REGEX]",
        help="engine to scrape (repeatable)",
    )
    add(
        "--engine-passthrough",
        dest="engine_passthrough",
        action=argparse.BooleanOptionalAction,
        help="also publish engines' own families, renamed (default off)",
    )
    add(
        "--engine-process-pattern",
        dest="engine_process_patterns",
        action="append",
        metavar="KIND=REGEX",
        help="recognise more engine processes by command line (repeatable)",
    )
    add(
        "--collect-interval-seconds",
        dest="collect_interval_seconds",
        metavar="S",
        help="how often GPU and host readings are collected and /metrics re-rendered, default 0.5",
    )
    add("--gpu.sampler-interval-seconds", dest="gpu_sampler_interval_seconds", metavar="S", help="default 1")
    add("--gpu.process-limit", dest="gpu_process_limit", metavar="N", help="processes per GPU, default 32")
    add("--host.engine-process-limit", dest="host_engine_process_limit", metavar="N", help="default 16")
    add(
        "--nvml-retry-seconds", dest="nvml_retry_seconds", metavar="S", help="NVML re-init period, default 30"
    )
    add("--log-level", dest="log_level", choices=_LOG_LEVELS, help="default info")
    return parser


def _from_file(path: Path) -> dict[str, Any]:
    where = str(path)
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read the config file: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {exc}") from None
    if document is None:
        return {}
    if not isinstance(document, Mapping):
        raise ConfigError(
            f"{where}: the top level must be a mapping of settings, got {type(document).__name__}"
        )
    unknown = sorted(set(map(str, document)) - set(_FIELD_NAMES))
    if unknown:
        raise ConfigError(
            f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(_FIELD_NAMES)}"
        )
    raw = dict(document)
    for key in ("targets", "engine_process_patterns"):
        if key in raw and not isinstance(raw[key], list):
            raise ConfigError(f"{where}: {key} must be a list, got {raw[key]!r}")
    if "targets" in raw:
        raw["targets"] = [(f"{where}: targets[{i}]", item) for i, item in enumerate(raw["targets"])]
    if "engine_process_patterns" in raw:
        items = raw["engine_process_patterns"]
        raw["engine_process_patterns"] = [
            (f"{where}: engine_process_patterns[{i}]", p) for i, p in enumerate(items)
        ]
    return {key: (f"{where}: {key}", value) for key, value in raw.items()}


_SINGULAR = {"targets": "target", "engine_process_patterns": "engine_process_pattern"}


def _env_name(key: str) -> str:
    """EXPORTER_ + the flag's name: --target -> EXPORTER_TARGET, --collector.gpu -> EXPORTER_COLLECTOR_GPU."""
    return ENV_PREFIX + _SINGULAR.get(key, key).upper()


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for key in _FIELD_NAMES:
        name = _env_name(key)
        if name not in environ:
            continue
        value = environ[name]
        where = f"environment {name}"
        if key == "targets":
            specs = [s for s in re.split(r"[;\n]", value) if s.strip()]
            value = [(where, parse_target_spec(s.strip(), where)) for s in specs]
        elif key == "engine_process_patterns":
            value = [(where, s.strip()) for s in re.split(r"[;\n]", value) if s.strip()]
        raw[key] = (where, value)
    return raw


def _from_flags(parser: argparse.ArgumentParser, namespace: argparse.Namespace) -> dict[str, Any]:
    flag_of = {action.dest: action.option_strings[0] for action in parser._actions if action.option_strings}
    raw: dict[str, Any] = {}
    for key, value in vars(namespace).items():
        if key == "config":
            continue
        where = f"flag {flag_of.get(key, key)}"
        if key == "targets":
            value = [(where, parse_target_spec(s, where)) for s in value]
        elif key == "engine_process_patterns":
            value = [(where, s) for s in value]
        raw[key] = (where, value)
    return raw


def _validate(raw: dict[str, tuple[str, Any]], environ: Mapping[str, str]) -> Config:
    values: dict[str, Any] = {}
    for key, (where, value) in raw.items():
        if key in {"collector_gpu", "collector_host", "engine_passthrough"}:
            values[key] = parse_bool(value, where)
        elif key == "listen_address":
            split_listen_address(value, where)
            values[key] = str(value)
        elif key == "web_config_file":
            path = Path(str(value))
            if not path.is_file():
                raise ConfigError(f"{where}: web config file {str(path)!r} does not exist or is not a file")
            values[key] = path
        elif key == "targets":
            values[key] = tuple(parse_target(item, item_where, environ) for item_where, item in value)
            names = [t.name for t in values[key]]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ConfigError(f"{where}: target name(s) used twice: {', '.join(duplicates)}")
        elif key == "engine_process_patterns":
            values[key] = tuple(parse_engine_pattern(item, item_where) for item_where, item in value)
        elif key == "gpu_sampler_interval_seconds":
            values[key] = parse_number(value, where, 0.2, 3600)
        elif key == "collect_interval_seconds":
            values[key] = parse_number(value, where, 0.1, 3600)
        elif key == "nvml_retry_seconds":
            values[key] = parse_number(value, where, 1, 86400)
        elif key in {"gpu_process_limit", "host_engine_process_limit"}:
            values[key] = parse_number(value, where, 0, 1000, integer=True)
        elif key == "log_level":
            if str(value).lower() not in _LOG_LEVELS:
                raise ConfigError(f"{where}: {value!r} is not one of {', '.join(_LOG_LEVELS)}")
            values[key] = str(value).lower()
    return Config(**values)


def load_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read file, environment and flags; return a validated Config or raise ConfigError.

    argparse itself exits with status 2 and a usage message for unknown flags or missing flag values.
    """
    environ = os.environ if environ is None else environ
    parser = build_parser()
    namespace = parser.parse_args(argv)
    config_file = getattr(namespace, "config", None) or environ.get(ENV_PREFIX + "CONFIG")
    raw: dict[str, tuple[str, Any]] = {}
    if config_file:
        raw.update(_from_file(Path(config_file)))
    raw.update(_from_environment(environ))
    raw.update(_from_flags(parser, namespace))
    return _validate(raw, environ)


__all__ = [
    "ENGINE_KINDS",
    "MAX_TARGET_TIMEOUT_SECONDS",
    "Config",
    "ConfigError",
    "EngineProcessPattern",
    "TargetConfig",
    "build_parser",
    "load_config",
    "split_listen_address",
]
