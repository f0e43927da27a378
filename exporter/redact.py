"""The one place credentials are taken out of what the exporter says: messages, log lines and labels.

`redact(text)` replaces URL userinfo (`http://user:pass@host` -> `http://<redacted>@host`), the value of a
credential-looking `key=value` pair (`password=`, `api_key=`, `hf_token=`) and the credential of a
`Bearer ...` or `Basic ...` Authorization value with `<redacted>`. `redact_arguments(argv)` does the same
for a command line split into arguments (`--api-key X`, `--hf-token=X`). Configuration errors
(settings.ConfigError), every log line of the process (`RedactingFormatter`, installed by `__main__`),
engine label values and process labels go through them. Plain functions of text, with no state, so
that another wing could share them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

REDACTED = "<redacted>"
# Names that hold a secret: api_key, hf_token, password, passwd, secret, auth, credential, authorization...
_SECRET_NAME = r"[\w.-]*(?:key|token|secret|passw|auth|credential)[\w.-]*"
# scheme://userinfo@ : everything up to the last @ before the host (a password may hold an unescaped @)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s?#]*@")
# ...=value, but not NAME_env=VARIABLE (auth_header_env names a variable, it does not hold the secret)
_PAIR = re.compile(rf"(?i)\b(?![\w.-]*_env=)({_SECRET_NAME}=)[^\s&,;'\"]+")
_AUTHORIZATION = re.compile(r"\b((?:Bearer|Basic)\s+)[A-Za-z0-9._~+/=-]+")
_SECRET_OPTION = re.compile(rf"^--?{_SECRET_NAME}$", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with every credential it shows replaced by <redacted>."""
    if "@" in text:
        text = _USERINFO.sub(rf"\1{REDACTED}@", text)
    if "=" in text:
        text = _PAIR.sub(rf"\1{REDACTED}", text)
    if "Bearer" in text or "Basic" in text:
        text = _AUTHORIZATION.sub(rf"\1{REDACTED}", text)
    return text


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
        if _SECRET_OPTION.match(option):
            result.append(f"{option}={REDACTED}" if sep else arg)
            hide_next = not sep
        else:
            result.append(redact(arg))
    return result


class RedactingFormatter(logging.Formatter):
    """A log formatter whose every line (message, arguments and traceback) has gone through redact()."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


__all__ = ["REDACTED", "RedactingFormatter", "redact", "redact_arguments"]
