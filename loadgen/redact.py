"""Credentials never leave the process: the one place that knows them, and scrubs every way out.

A secret is registered where it enters: the API key and the control token when they are read
(credentials.read_secret), a URL's userinfo and query values when a scenario, a client or an
--allow-url takes the URL (register_url). `scrub(text)` replaces every registered secret, in its raw
and percent-decoded forms, with `<redacted>`; `redact_url(url)` writes a URL without its userinfo
and query values. Every way out goes through them: log lines (LogScrubber, on the process's
handlers), error messages on request records, the report (config and error messages), the
control API's answers, messages on stderr, and /metrics label values.

URL pieces and query values shorter than MIN_SCRUB characters are not scrubbed from free text (a
query value `1` would garble every number); URLs themselves are always written redacted. Secrets
the process is configured with (`register`: the API key, the control token) are kept for its whole
life; URL pieces (`register_url`, which any caller of POST /runs adds, refused or not) only the latest
MAX_SECRETS of them, so a long-lived `serve` does not grow with its runs, and a flood of URLs cannot
push the API key out.

`bounded(text)` keeps a message readable whatever it echoes: past MAX_MESSAGE characters its middle is
cut, with a note of how much. LoadgenError shows every message scrubbed and bounded (errors.py), and
LogScrubber bounds every log line at MAX_LOG_LINE.
"""

from __future__ import annotations

import logging
import threading
import urllib.parse
from collections import OrderedDict

__all__ = [
    "MAX_MESSAGE", "REDACTED", "LogScrubber", "bounded", "redact_url", "register", "register_url",
    "registered", "scrub", "scrub_json",
]  # fmt: skip

REDACTED = "<redacted>"
MIN_SCRUB = 4
MAX_SECRETS = 1024
MAX_MESSAGE = 1000  # characters of a message meant for people; its middle is cut past this
MAX_LOG_LINE = 16 * 1024  # characters of one log line (a traceback included)

_pinned: set[str] = set()  # configured secrets: kept for the process's life
_recent: OrderedDict[str, None] = OrderedDict()  # URL pieces: the latest MAX_SECRETS
_ordered: list[str] = []  # both, longest first when scrubbing
_lock = threading.Lock()  # logging may run on other threads (uvicorn, the progress writer)


def register(*secrets: str | None, pinned: bool = True) -> None:
    """Remember secrets (an API key, a token) so that no output carries them; `pinned=False` for
    pieces a caller gave (kept among the latest MAX_SECRETS only)."""
    global _ordered
    new = [s for s in secrets if s and s not in _pinned and (pinned or s not in _recent)]
    if not new:
        return
    with _lock:
        for secret in new:
            if pinned:
                _pinned.add(secret)
                _recent.pop(secret, None)
            else:
                _recent[secret] = None
        while len(_recent) > MAX_SECRETS:
            _recent.popitem(last=False)
        _ordered = sorted(_pinned.union(_recent), key=len, reverse=True)


def registered() -> tuple[str, ...]:
    """The secrets registered so far (for a worker process to scrub the same: workers.py)."""
    with _lock:
        return (*_pinned, *_recent)


def register_url(url: str) -> None:
    """Remember the secret parts of a URL: userinfo, password, query values (raw and decoded)."""
    register(*url_secrets(url), pinned=False)


def scrub(text: str) -> str:
    """`text` with every registered secret replaced by <redacted>."""
    for secret in _ordered:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def bounded(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text`, or past `limit` characters its start and end with a note of how much was cut between
    (scrub first: a secret cut in two would no longer be found)."""
    if len(text) <= limit:
        return text
    head, tail = text[: limit * 2 // 3], text[len(text) - limit // 3 :]
    return f"{head}...[{len(text) - len(head) - len(tail)} characters cut]...{tail}"


def scrub_json(value: object) -> object:
    """A JSON-ready value (dicts, lists, strings) with every string scrubbed, keys included."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub(k) if isinstance(k, str) else k: scrub_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_json(item) for item in value]
    return value


def redact_url(url: str) -> str:
    """The URL with credentials (`user:pw@`) and query values replaced by <redacted>."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    query = "&".join(
        f"{name}={REDACTED}" if sep else REDACTED
        for name, sep, _ in (item.partition("=") for item in parts.query.split("&"))
    ) if parts.query else ""  # fmt: skip
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_secrets(url: str) -> list[str]:
    """The pieces of a URL that may be secret (userinfo, password, query values), raw and decoded."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return []
    found: set[str] = set()
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        found |= {userinfo, urllib.parse.unquote(userinfo)}
        password = userinfo.partition(":")[2]
        found |= {password, urllib.parse.unquote(password)}
    for item in parts.query.split("&") if parts.query else ():
        name, sep, value = item.partition("=")
        value = value if sep else name
        found |= {value, urllib.parse.unquote_plus(value)}
    return sorted((s for s in found if len(s) >= MIN_SCRUB), key=len, reverse=True)


class LogScrubber(logging.Filter):
    """A handler filter: the formatted message, and any traceback, scrubbed and bounded (MAX_LOG_LINE)
    before it is written."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{logging.Formatter().formatException(record.exc_info)}"
            record.exc_info, record.exc_text = None, None
        record.msg, record.args = bounded(scrub(message), MAX_LOG_LINE), ()
        return True

    @classmethod
    def install(cls) -> None:
        """On every handler of the root logger (call after logging is configured)."""
        for handler in logging.getLogger().handlers:
            if not any(isinstance(f, cls) for f in handler.filters):
                handler.addFilter(cls())
