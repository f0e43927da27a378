"""Exporter configuration: YAML file, EXPORTER_* environment variables and flags, in that order of strength.

Every setting has one name in three spellings: the flag `--listen-address` / `--collector.gpu`, the YAML
key `listen_address` / `collector_gpu`, the variable `EXPORTER_LISTEN_ADDRESS` / `EXPORTER_COLLECTOR_GPU`.
Precedence: flags > environment > file > defaults. Everything is validated before the exporter starts;
a problem raises ConfigError with a message that names the setting, the source and what is accepted.

`SETTINGS` is the one table of settings (`settings.Setting`): the argparse parser, the environment names,
the validation and exporter/README.md's table come from it; `Config`'s field defaults are the defaults.
A target's options are the table `TARGET_OPTIONS` in the same way.
"""

from __future__ import annotations

import argparse
import os
import re
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from exporter.engines.registry import ENGINE_KINDS
from exporter.engines.tls import TlsOptions
from exporter.settings import (
    ENV_PREFIX,
    ConfigError,
    Setting,
    boolean,
    choice,
    existing_file,
    integer,
    listen_address,
    number,
    parse_bool,
    parse_number,
    parse_regex,
    split_items,
    split_listen_address,
    yaml_problem,
)

DEFAULT_LISTEN_ADDRESS = "0.0.0.0:9840"

# A target's scrape runs while Prometheus scrapes the exporter (scrape_timeout 10 s in
# prometheus/prometheus.yml): its deadline, plus the collector's margin, must stay well inside that.
MAX_TARGET_TIMEOUT_SECONDS = 8.0
_TARGET_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class TargetConfig:
    name: str
    url: str
    kind: str | None = None
    model: str | None = None
    auth_header_env: str | None = None
    timeout_seconds: float = 2.0
    process: str | None = None  # regex searched in the engine's command line, for the GPU join
    max_bytes: int = 32 * 1024 * 1024  # budget of one metrics body
    max_series: int = 50_000  # budget of one metrics payload (real engines serve 100-2,000)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False

    @property
    def tls(self) -> TlsOptions:
        return TlsOptions(
            self.ca_file, self.cert_file, self.key_file, self.server_name, self.insecure_skip_verify
        )


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
    collect_interval_seconds: float = 1.0
    gpu_sampler_interval_seconds: float = 1.0
    gpu_process_limit: int = 32
    host_engine_process_limit: int = 16
    nvml_retry_seconds: float = 30.0
    log_level: str = "info"
    kubernetes_discovery: bool = False
    kubernetes_node_name: str | None = None
    kubernetes_api_url: str | None = None
    kubernetes_pod_resources_socket: Path | None = None

    @property
    def listen_host_port(self) -> tuple[str, int]:
        return split_listen_address(self.listen_address)


LOG_LEVELS = ("debug", "info", "warning", "error")

# ---------------------------------------------------------------------------------------------------------
# A target: NAME=URL[,key=value...] (flag, environment) or a YAML mapping; one TargetOption per key.


@dataclass(frozen=True)
class TargetOption:
    key: str
    parse: Callable[[Any, str, Mapping[str, str]], Any]  # (value, "WHERE: target 'NAME'", environ)
    empty_is_unset: bool = True  # `key=` or an empty YAML value means the default


def _kind(value: Any, where: str, _: Mapping[str, str]) -> str:
    if value not in ENGINE_KINDS:
        raise ConfigError(f"{where} kind {value!r} is not one of {', '.join(ENGINE_KINDS)}")
    return str(value)


def _auth_header_env(value: Any, where: str, environ: Mapping[str, str]) -> str:
    if not _ENV_NAME.match(str(value)):
        raise ConfigError(f"{where} auth_header_env {value!r} is not a variable name")
    if value not in environ:
        raise ConfigError(f"{where} reads its Authorization header from ${value}, which is not set")
    return str(value)


def _timeout_seconds(value: Any, where: str, _: Mapping[str, str]) -> float:
    where = f"{where} timeout_seconds"
    timeout = parse_number(value, where, 0.05, float("inf"))
    if timeout > MAX_TARGET_TIMEOUT_SECONDS:
        raise ConfigError(
            f"{where}: {timeout:g} s is more than {MAX_TARGET_TIMEOUT_SECONDS:g} s; engines are read "
            "while Prometheus scrapes the exporter, so the whole engines round must end well within "
            "Prometheus's scrape_timeout (10 s in prometheus/prometheus.yml)"
        )
    return timeout


def _bounded_integer(key: str, minimum: int, maximum: int) -> Callable[[Any, str, Mapping[str, str]], int]:
    return lambda value, where, _: int(parse_number(value, f"{where} {key}", minimum, maximum, integer=True))


def _target_file(key: str) -> Callable[[Any, str, Mapping[str, str]], str]:
    def parse(value: Any, where: str, _: Mapping[str, str]) -> str:
        if not Path(str(value)).is_file():
            raise ConfigError(f"{where} {key} {str(value)!r} does not exist or is not a file")
        return str(value)

    return parse


def _check_tls(target: TargetConfig, where: str) -> None:
    """Build the target's TLS context now, so a bad certificate stops the exporter at start."""
    if target.key_file and not target.cert_file:
        raise ConfigError(f"{where} key_file needs cert_file (the client certificate it belongs to)")
    if target.tls != TlsOptions() and urlsplit(target.url).scheme != "https":
        raise ConfigError(f"{where} has TLS options but its url is not https://")
    try:
        target.tls.context()
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{where} TLS files cannot be used: {exc}") from None


# Options beyond name and url, in the order they are checked; TargetConfig's defaults are theirs.
TARGET_OPTIONS: tuple[TargetOption, ...] = (
    TargetOption("kind", _kind),
    TargetOption("model", lambda value, where, _: str(value)),
    TargetOption("auth_header_env", _auth_header_env),
    TargetOption("timeout_seconds", _timeout_seconds, empty_is_unset=False),
    TargetOption("process", lambda value, where, _: parse_regex(value, f"{where} process")),
    TargetOption("max_bytes", _bounded_integer("max_bytes", 1024, 256 * 1024 * 1024), empty_is_unset=False),
    TargetOption("max_series", _bounded_integer("max_series", 1, 1_000_000), empty_is_unset=False),
    TargetOption("ca_file", _target_file("ca_file")),
    TargetOption("cert_file", _target_file("cert_file")),
    TargetOption("key_file", _target_file("key_file")),
    TargetOption("server_name", lambda value, where, _: str(value)),
    TargetOption(
        "insecure_skip_verify",
        lambda value, where, _: parse_bool(value, f"{where} insecure_skip_verify"),
        empty_is_unset=False,
    ),
)
TARGET_KEYS = ("name", "url", *(option.key for option in TARGET_OPTIONS))
TARGET_SPEC = "NAME=URL[," + ",".join(f"{option.key}=" for option in TARGET_OPTIONS) + "]"


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
        if not sep or key not in TARGET_KEYS[2:]:
            raise ConfigError(
                f"{where}: item {item!r} in {spec!r} is not KEY=VALUE "
                f"with KEY one of {', '.join(TARGET_KEYS[2:])}"
            )
        result[key] = value.strip()
    return result


def parse_target(raw: Any, where: str, environ: Mapping[str, str]) -> TargetConfig:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping with keys {', '.join(TARGET_KEYS)}, got {raw!r}")
    unknown = sorted(set(map(str, raw)) - set(TARGET_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(TARGET_KEYS)}")
    name = str(raw.get("name") or "")
    if not _TARGET_NAME.match(name):
        raise ConfigError(f"{where}: target name {name!r} must be 1-64 characters of A-Z a-z 0-9 _ . -")
    url = str(raw.get("url") or "")
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise ConfigError(f"{where}: target {name!r} url {url!r} contains spaces or control characters")
    try:
        parts = urlsplit(url)  # raises ValueError for a broken IPv6 literal ("http://[::1/")
    except ValueError as exc:
        raise ConfigError(f"{where}: target {name!r} url {url!r} is not a URL ({exc})") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(f"{where}: target {name!r} url {url!r} must be http(s)://HOST[:PORT][/path]")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ConfigError(f"{where}: target {name!r} url {url!r} has an invalid port") from None
    options = {
        option.key: option.parse(raw[option.key], f"{where}: target {name!r}", environ)
        for option in TARGET_OPTIONS
        if raw.get(option.key) is not None and (raw[option.key] != "" or not option.empty_is_unset)
    }
    target = TargetConfig(name=name, url=url, **options)
    _check_tls(target, f"{where}: target {name!r}")
    return target


def parse_targets(raw: Any, where: str, environ: Mapping[str, str]) -> tuple[TargetConfig, ...]:
    targets = tuple(parse_target(item, item_where, environ) for item_where, item in raw)
    names = [t.name for t in targets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{where}: target name(s) used twice: {', '.join(duplicates)}")
    return targets


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
    return EngineProcessPattern(kind, parse_regex(pattern, f"{where}:"))


def _node_name(value: Any, where: str, _: Mapping[str, str]) -> str:
    name = str(value)
    if not re.fullmatch(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?", name):
        raise ConfigError(f"{where}: {name!r} is not a Kubernetes node name (a DNS subdomain)")
    return name


def _api_url(value: Any, where: str, _: Mapping[str, str]) -> str:
    url = str(value).rstrip("/")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigError(f"{where}: {url!r} is not a URL") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname or parts.username or parts.path:
        raise ConfigError(f"{where}: {url!r} is not http(s)://HOST[:PORT] (no path, no credentials)")
    return url


def _engine_patterns(raw: Any, where: str, _: Mapping[str, str]) -> tuple[EngineProcessPattern, ...]:
    return tuple(parse_engine_pattern(item, item_where) for item_where, item in raw)


# ---------------------------------------------------------------------------------------------------------
# The settings: one row each, in exporter/README.md's order (tests/exporter/test_config.py compares).

# Read before the others (load_config); not a Config field.
CONFIG_FILE = Setting(
    "config",
    "--config",
    lambda value, where, _: Path(str(value)),
    "YAML configuration file",
    "FILE",
    yaml=None,
)
SETTINGS: tuple[Setting, ...] = (
    Setting("listen_address", "--listen-address", listen_address, "address to serve on", "HOST:PORT"),
    Setting(
        "web_config_file",
        "--web-config-file",
        existing_file("web config file"),
        "exporter-toolkit web config: TLS and basic auth",
        "FILE",
        default_note=" (plain HTTP, no auth)",
    ),
    Setting("collector_gpu", "--collector.gpu", boolean(), "NVML collector"),
    Setting("collector_host", "--collector.host", boolean(), "psutil collector"),
    Setting(
        "targets",
        "--target",
        parse_targets,
        "engine to scrape",
        TARGET_SPEC,
        repeatable=True,
        yaml="targets: [{name, url, ...}]",
        from_text=parse_target_spec,
    ),
    Setting(
        "engine_passthrough",
        "--engine-passthrough",
        boolean(),
        "also publish engines' own families, renamed",
    ),
    Setting(
        "engine_process_patterns",
        "--engine-process-pattern",
        _engine_patterns,
        "recognise more engine processes by command line",
        "KIND=REGEX",
        repeatable=True,
        yaml="engine_process_patterns: [{engine_kind, pattern}]",
    ),
    Setting(
        "collect_interval_seconds",
        "--collect-interval-seconds",
        number(0.1, 3600),
        "how old, at most, the GPU and host readings a scrape gets are (read before each expected scrape)",
        "S",
    ),
    Setting(
        "gpu_sampler_interval_seconds",
        "--gpu.sampler-interval-seconds",
        number(0.2, 3600),
        "how often, at most, the slow NVML readings are read (before expected scrapes)",
        "S",
    ),
    Setting(
        "gpu_process_limit",
        "--gpu.process-limit",
        integer(0, 1000),
        "GPU processes listed",
        "N",
        default_note=" per GPU",
    ),
    Setting(
        "host_engine_process_limit",
        "--host.engine-process-limit",
        integer(0, 1000),
        "engine process trees read",
        "N",
    ),
    Setting("nvml_retry_seconds", "--nvml-retry-seconds", number(1, 86400), "NVML re-init period", "S"),
    Setting("log_level", "--log-level", choice(LOG_LEVELS), "log level", "LEVEL", choices=LOG_LEVELS),
    Setting(
        "kubernetes_discovery",
        "--kubernetes.discovery",
        boolean(),
        "scrape the engine pods of this node that opt in (llmobs.io/engine); needs the node's name",
    ),
    Setting(
        "kubernetes_node_name",
        "--kubernetes.node-name",
        _node_name,
        "this node's name (in a pod: the downward API's spec.nodeName)",
        "NODE",
    ),
    Setting(
        "kubernetes_api_url",
        "--kubernetes.api-url",
        _api_url,
        "the Kubernetes API, e.g. http://127.0.0.1:8001 for `kubectl proxy`",
        "URL",
        default_note=" (in a pod: its service account's API server)",
    ),
    Setting(
        "kubernetes_pod_resources_socket",
        "--kubernetes.pod-resources-socket",
        lambda value, where, _: Path(str(value)),
        "the kubelet's pod-resources socket, for GPU -> pod attribution",
        "PATH",
        default_note=" (off; the kubelet's: /var/lib/kubelet/pod-resources/kubelet.sock)",
    ),
)
_BY_KEY = {setting.key: setting for setting in SETTINGS}
_DEFAULTS = {f.name: f.default for f in fields(Config)}


def default_of(setting: Setting) -> Any:
    return None if setting is CONFIG_FILE else _DEFAULTS[setting.key]


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
    for setting in (CONFIG_FILE, *SETTINGS):
        setting.add_to(parser, default_of(setting))
    return parser


# ---------------------------------------------------------------------------------------------------------
# The three sources, each turned into {key: (where, raw value)}, a list setting's value a list of
# (where, item); then merged and validated once.


def _from_file(path: Path) -> dict[str, Any]:
    where = str(path)
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read the config file: {exc.strerror or exc}") from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise ConfigError(f"{where}: not valid YAML: {yaml_problem(exc)}") from None
    if document is None:
        return {}
    if not isinstance(document, Mapping):
        raise ConfigError(
            f"{where}: the top level must be a mapping of settings, got {type(document).__name__}"
        )
    unknown = sorted(set(map(str, document)) - set(_BY_KEY))
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(_BY_KEY)}")
    raw: dict[str, Any] = {}
    for key, value in document.items():
        if _BY_KEY[key].repeatable:
            if not isinstance(value, list):
                raise ConfigError(f"{where}: {key} must be a list, got {value!r}")
            value = [(f"{where}: {key}[{i}]", item) for i, item in enumerate(value)]
        raw[key] = (f"{where}: {key}", value)
    return raw


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.env in environ:
            where, value = f"environment {setting.env}", environ[setting.env]
            raw[setting.key] = (
                where,
                setting.items(split_items(value), where) if setting.repeatable else value,
            )
    return raw


def _from_flags(namespace: argparse.Namespace) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.key in vars(namespace):
            where, value = f"flag {setting.flag}", getattr(namespace, setting.key)
            raw[setting.key] = (where, setting.items(value, where) if setting.repeatable else value)
    return raw


def load_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read file, environment and flags; return a validated Config or raise ConfigError.

    argparse itself exits with status 2 and a usage message for unknown flags or missing flag values.
    """
    environ = os.environ if environ is None else environ
    namespace = build_parser().parse_args(argv)
    config_file = vars(namespace).get("config") or environ.get(CONFIG_FILE.env)
    raw: dict[str, tuple[str, Any]] = {}
    if config_file:
        raw.update(_from_file(Path(config_file)))
    raw.update(_from_environment(environ))
    raw.update(_from_flags(namespace))
    values = {key: _BY_KEY[key].parse(value, where, environ) for key, (where, value) in raw.items()}
    config = Config(**values)
    if config.kubernetes_discovery:
        _check_discovery(config, raw["kubernetes_discovery"][0], environ)
    return config


def _check_discovery(config: Config, where: str, environ: Mapping[str, str]) -> None:
    if not config.kubernetes_node_name:
        raise ConfigError(
            f"{where}: Kubernetes discovery needs this node's name: set --kubernetes.node-name "
            "(EXPORTER_KUBERNETES_NODE_NAME; in a pod, from the downward API's spec.nodeName)"
        )
    if not config.kubernetes_api_url and not environ.get("KUBERNETES_SERVICE_HOST"):
        raise ConfigError(
            f"{where}: not in a pod ($KUBERNETES_SERVICE_HOST is not set): set --kubernetes.api-url "
            "(e.g. http://127.0.0.1:8001 with `kubectl proxy`)"
        )


__all__ = [
    "ENGINE_KINDS",
    "ENV_PREFIX",
    "MAX_TARGET_TIMEOUT_SECONDS",
    "SETTINGS",
    "TARGET_OPTIONS",
    "Config",
    "ConfigError",
    "EngineProcessPattern",
    "TargetConfig",
    "build_parser",
    "load_config",
    "split_listen_address",
]
