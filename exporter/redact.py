"""The one place credentials are taken out of what the exporter says: messages, log lines and labels.

`redact(text)` replaces URL userinfo (`http://user:pass@host` -> `http://<redacted>@host`), the value of a
credential-looking `key=value` pair (`password=`, `api_key=`, `hf_token=`) and the credential of a
`Bearer ...` or `Basic ...` Authorization value with `<redacted>`. `redact_arguments(argv)` does the same
for a command line split into arguments (`--api-key X`, `--hf-token=X`). Configuration errors
(settings.ConfigError), every log line of the process (`RedactingFormatter`, installed by `__main__`),
engine label values and process labels go through them. Plain functions of text, with no state, so
that another wing could share them.

`bounded(text)` keeps a message readable whatever it echoes: past MAX_MESSAGE characters its middle is
cut, with a note of how much (a 1 MB URL in a configuration error becomes its first and last few hundred
characters). ExporterError shows every message through both (errors.py), log lines are bounded at
MAX_LOG_LINE. Each pattern runs in time linear in the text, so a hostile megabyte costs milliseconds
(the `key=value` pattern once backtracked: 10 KB of `a.a.a.` took 3 s).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

REDACTED = "<redacted>"
MAX_MESSAGE = 1000  # characters of a message meant for people; its middle is cut past this
MAX_LOG_LINE = 16 * 1024  # characters of one log line (a traceback included)
# Names that hold a secret: api_key, hf_token, password, passwd, secret, auth, credential, authorization...
_SECRET_WORD = re.compile(r"(?i)key|token|secret|passw|auth|credential")
# scheme://userinfo@ : everything up to the last @ before the host (a password may hold an unescaped @);
# the scheme is a whole run of scheme characters (possessive: no backtracking into it)
_USERINFO = re.compile(r"(?i)(?<![a-z0-9+.-])([a-z][a-z0-9+.-]*+://)[^/\s?#]*@")
# NAME= where NAME is a whole run of name characters (each run is read once); the value follows
_NAME = re.compile(r"(?<![\w.-])([\w.-]++)=")
_VALUE = re.compile(r"[^\s&,;'\"]*+")
_AUTHORIZATION = re.compile(r"\b((?:Bearer|Basic)\s+)[A-Za-z0-9._~+/=-]++")
_SECRET_OPTION = re.compile(r"^--?[\w.-]*$")


def redact(text: str) -> str:
    """`text` with every credential it shows replaced by <redacted>."""
    if "@" in text:
        text = _USERINFO.sub(rf"\1{REDACTED}@", text)
    if "=" in text:
        text = _redact_pairs(text)
    if "Bearer" in text or "Basic" in text:
        text = _AUTHORIZATION.sub(rf"\1{REDACTED}", text)
    return text


def bounded(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text`, or past `limit` characters its start and end with a note of how much was cut between."""
    if len(text) <= limit:
        return text
    head, tail = text[: limit * 2 // 3], text[len(text) - limit // 3 :]
    return f"{head}...[{len(text) - len(head) - len(tail)} characters cut]...{tail}"


def _secret_name(name: str) -> bool:
    """api_key, hf_token, password...; not NAME_env (auth_header_env names a variable, not a secret)."""
    return bool(_SECRET_WORD.search(name)) and not name.lower().endswith("_env")


def _redact_pairs(text: str) -> str:
    """The value of each `secret_name=value` replaced (a value runs to a space, & , ; or a quote)."""
    pieces, done = [], 0
    for match in _NAME.finditer(text):
        if match.start() < done or not _secret_name(match.group(1)):
            continue
        end = _VALUE.match(text, match.end()).end()  # type: ignore[union-attr]  # matches "" at least
        if end > match.end():
            pieces += [text[done : match.end()], REDACTED]
            done = end
    return "".join(pieces) + text[done:] if pieces else text


def redact_arguments(argv: Sequence[str]) -> list[str]:
    """A command line with the values of secret-looking options (`--api-key X`, `--hf-token=X`) and any
    URL userinfo replaced by <redacted>."""
    result: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            result.append(REDACTED)
            hide_next = False
            continue
        option, sep, _ = arg.partition("=")
        if _SECRET_OPTION.match(option) and _SECRET_WORD.search(option):
            result.append(f"{option}={REDACTED}" if sep else arg)
            hide_next = not sep
        else:
            result.append(redact(arg))
    return result


class RedactingFormatter(logging.Formatter):
    """A log formatter whose every line (message, arguments and traceback) has gone through redact(), and
    is at most MAX_LOG_LINE characters."""

    def format(self, record: logging.LogRecord) -> str:
        return bounded(redact(super().format(record)), MAX_LOG_LINE)


__all__ = ["MAX_MESSAGE", "REDACTED", "RedactingFormatter", "bounded", "redact", "redact_arguments"]
