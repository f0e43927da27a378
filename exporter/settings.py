"""Settings as data: one `Setting` gives a setting's flag, environment variable, YAML key, parser and help.

The argparse parser, the environment names, the validation and the flag/environment/YAML/default table of
exporter/README.md all come from one table of these (`config.SETTINGS`; tests/exporter/test_config.py keeps
the README equal to it). The value parsers below raise ConfigError with a message that names the setting,
where it came from (`where`: "flag --listen-address", "environment EXPORTER_TARGET", "FILE: targets[0]")
and what is accepted.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.errors import ExporterError
from exporter.redact import redact

ENV_PREFIX = "EXPORTER_"
# parser(raw value, where, environment) -> typed value; raises ConfigError
Parser = Callable[[Any, str, Mapping[str, str]], Any]


def yaml_problem(exc: BaseException) -> str:
    """What is wrong with a YAML file and where, never the line itself (it may hold a secret: PyYAML's own
    message quotes it); a document nested past the recursion limit says so."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"{getattr(exc, 'problem', None) or 'not YAML'}{where}"


class ConfigError(ExporterError, ValueError):
    """A setting is missing, malformed or out of range; the message says which and why, never a credential
    (it goes through redact.redact: a target URL's password, for one, is shown as <redacted>)."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


@dataclass(frozen=True)
class Setting:
    """One setting: `--flag` = `EXPORTER_FLAG` = YAML `key` (the Config field)."""

    key: str
    flag: str
    parse: Parser
    help: str
    metavar: str = ""  # "" for a boolean (`--[no-]flag`)
    repeatable: bool = False  # a list: the flag repeated, `;` between items in the environment, a YAML list
    yaml: str | None = ""  # README's YAML cell when it is more than the key; None: not a YAML key
    default_note: str = ""  # words after the default in the README, e.g. " per GPU"
    choices: tuple[str, ...] = ()
    # how one item written as text (flag, environment) becomes its YAML form, e.g. NAME=URL -> {name, url}
    from_text: Callable[[str, str], Any] | None = None

    def items(self, texts: Sequence[str], where: str) -> list[tuple[str, Any]]:
        """A list setting's items from flags or the environment, each with where it came from."""
        return [(where, self.from_text(text, where) if self.from_text else text) for text in texts]

    @property
    def env(self) -> str:
        """EXPORTER_ + the flag's name: --target -> EXPORTER_TARGET, --gpu.process-limit ->
        EXPORTER_GPU_PROCESS_LIMIT."""
        return ENV_PREFIX + re.sub(r"[.-]", "_", self.flag.lstrip("-")).upper()

    @property
    def boolean(self) -> bool:
        return not self.metavar

    def add_to(self, parser: argparse.ArgumentParser, default: Any) -> None:
        help_text = f"{self.help} (default {format_default(default)}{self.default_note})"
        if self.boolean:
            parser.add_argument(
                self.flag, dest=self.key, action=argparse.BooleanOptionalAction, help=help_text
            )
        elif self.repeatable:
            parser.add_argument(self.flag, dest=self.key, action="append", metavar=self.metavar,
                                help=f"{help_text}; repeatable")  # fmt: skip
        else:
            parser.add_argument(
                self.flag, dest=self.key, metavar=self.metavar, choices=self.choices or None, help=help_text
            )

    def readme_row(self, default: Any) -> tuple[str, str, str, str]:
        """flag | environment | YAML key | default, as exporter/README.md's configuration table has them."""
        flag = f"`--[no-]{self.flag[2:]}`" if self.boolean else f"`{self.flag} {self.metavar}`"
        env = f"`{self.env}`"
        if self.repeatable:
            flag, env = f"{flag} (repeatable)", f"{env} (`;`-separated)"
        yaml = "—" if self.yaml is None else f"`{self.yaml or self.key}`"
        text = f"`{default}`" if isinstance(default, str) else format_default(default)
        return flag, env, yaml, text + self.default_note


def format_default(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None or value == ():
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def split_items(text: str) -> list[str]:
    """The items of a list setting given as one string (environment): `;` or newline between them."""
    return [item.strip() for item in re.split(r"[;\n]", text) if item.strip()]


# ---------------------------------------------------------------------------------------------------------
# Value parsers: (raw value, where[, environment]) -> typed value.


def split_listen_address(value: Any, where: str = "listen_address") -> tuple[str, int]:
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


def parse_regex(value: Any, where: str) -> str:
    try:
        re.compile(str(value))
    except re.error as exc:
        raise ConfigError(f"{where} {str(value)!r} is not a valid regular expression: {exc}") from None
    return str(value)


def boolean() -> Parser:
    return lambda value, where, _: parse_bool(value, where)


def number(minimum: float, maximum: float) -> Parser:
    return lambda value, where, _: parse_number(value, where, minimum, maximum)


def integer(minimum: int, maximum: int) -> Parser:
    return lambda value, where, _: int(parse_number(value, where, minimum, maximum, integer=True))


def choice(choices: Sequence[str]) -> Parser:
    def parse(value: Any, where: str, _: Mapping[str, str]) -> str:
        if str(value).lower() not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(choices)}")
        return str(value).lower()

    return parse


def listen_address(value: Any, where: str, _: Mapping[str, str]) -> str:
    split_listen_address(value, where)
    return str(value)


def existing_file(what: str) -> Parser:
    def parse(value: Any, where: str, _: Mapping[str, str]) -> Path:
        path = Path(str(value))
        if not path.is_file():
            raise ConfigError(f"{where}: {what} {str(path)!r} does not exist or is not a file")
        return path

    return parse


__all__ = [
    "ENV_PREFIX",
    "ConfigError",
    "Parser",
    "Setting",
    "boolean",
    "choice",
    "existing_file",
    "format_default",
    "integer",
    "listen_address",
    "number",
    "parse_bool",
    "parse_number",
    "parse_regex",
    "split_items",
    "split_listen_address",
]
