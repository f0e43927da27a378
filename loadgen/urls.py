"""Base URLs: checked once with a message that says what is wrong, and normalized before comparing.

`check_url` accepts an http(s) URL with a host and, if given, a port from 1 to 65535; anything else
is a ScenarioError that names the problem (an unsupported scheme, a missing host, a port out of
range or not a number, spaces or control characters), with the URL redacted.

`normalize` writes a URL the way a server will read it, so that two spellings of one place compare
equal (RFC 3986 section 6): scheme and host in lower case, the default port dropped, percent-encoded
unreserved characters decoded (`%7E` -> `~`, `%2E` -> `.`), other escapes in upper case, and dot
segments removed (`/ok/../other` -> `/other`). A path whose meaning depends on the server is refused
rather than guessed: an encoded slash or backslash (`%2F`, `%5C`), a raw backslash, an encoded NUL, or a
dot segment with parameters (`/ok/..;/other`).
`under(url, allowed)` compares normalized URLs: same scheme, host and port, and a path at or below
the allowed one (a trailing `/v1` ignored on both, as --url ignores it).
"""

from __future__ import annotations

import re
import urllib.parse

from loadgen.errors import ScenarioError
from loadgen.redact import bounded, redact_url

__all__ = ["DEFAULT_PORTS", "check_url", "normalize", "under"]

DEFAULT_PORTS = {"http": 80, "https": 443}
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_AMBIGUOUS = ("%2F", "%5C", "%00", "\\")
SHOWN_URL, SHOWN_PORT = 300, 40  # characters of a refused URL and port shown in its message


def check_url(url: object, what: str = "--url") -> str:
    """`url` as a string if it is a usable http(s) base URL; ScenarioError saying why not."""
    if not url:
        raise ScenarioError(f"{what} is required: the server's base URL, e.g. http://127.0.0.1:8000")
    text = str(url)
    shown = bounded(redact_url(text), SHOWN_URL)  # a megabyte URL is not echoed whole
    if any(ch.isspace() or not ch.isprintable() for ch in text):
        raise ScenarioError(f"{what} {shown!r} contains spaces or control characters")
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError as exc:
        raise ScenarioError(f"{what} {shown!r} is not a URL ({exc})") from None
    if parts.scheme.lower() not in DEFAULT_PORTS:
        scheme = f"scheme {parts.scheme!r}" if parts.scheme and parts.netloc else "no scheme"
        raise ScenarioError(f"{what} {shown!r} has {scheme}: use http:// or https://")
    if not parts.hostname:
        raise ScenarioError(f"{what} {shown!r} has no host")
    port = parts.netloc.rpartition("@")[2].rpartition("]")[2].partition(":")[2]
    if port and not (port.isascii() and port.isdigit()):  # not '８０': digits to isdigit, not a port
        raise ScenarioError(f"{what} {shown!r}: port {bounded(port, SHOWN_PORT)!r} is not a number")
    if port and not 1 <= int(port) <= 65535:
        raise ScenarioError(f"{what} {shown!r}: port {int(port)} is out of range (1-65535)")
    return text


def normalize(url: str, what: str = "url") -> str:
    """The URL as a server reads it (see the module docstring); ScenarioError if it cannot be."""
    check_url(url, what)
    parts = urllib.parse.urlsplit(url)
    if any(bad in parts.path.upper() for bad in _AMBIGUOUS):
        raise ScenarioError(
            f"{what} {redact_url(url)!r}: an encoded slash, backslash or NUL in the path means "
            "different things to different servers; refused"
        )
    userinfo, at, _ = parts.netloc.rpartition("@")
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    scheme = parts.scheme.lower()
    port = parts.port
    netloc = f"{userinfo}{at}{host}" + (f":{port}" if port and port != DEFAULT_PORTS[scheme] else "")
    decoded = _ESCAPE.sub(_decode_unreserved, parts.path)
    if any(";" in segment and segment.partition(";")[0] in (".", "..") for segment in decoded.split("/")):
        raise ScenarioError(
            f"{what} {redact_url(url)!r}: a dot segment with parameters ('..;') is a parent directory to "
            "some servers (Tomcat, Jetty) and a name to others; refused"
        )
    path = _remove_dot_segments(decoded) or "/"
    return urllib.parse.urlunsplit((scheme, netloc, path, parts.query, ""))


def under(url: str, allowed: str) -> bool:
    """Whether base URL `url` is `allowed` or below it, both normalized; False if either cannot be."""
    try:
        a = urllib.parse.urlsplit(normalize(url))
        b = urllib.parse.urlsplit(normalize(allowed))
    except ScenarioError:
        return False
    if (a.scheme, a.hostname, a.port) != (b.scheme, b.hostname, b.port):
        return False
    path, prefix = _base_path(a.path), _base_path(b.path)
    return path == prefix or path.startswith(prefix + "/")


def _decode_unreserved(match: re.Match[str]) -> str:
    byte = int(match.group(1), 16)
    return chr(byte) if byte in _UNRESERVED else "%" + match.group(1).upper()


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, on the segments of an absolute path."""
    output: list[str] = []
    segments = path.split("/")
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                output.append("")
        elif segment == "..":
            if len(output) > 1:
                output.pop()
            if last:
                output.append("")
        else:
            output.append(segment)
    return "/".join(output)


def _base_path(path: str) -> str:
    path = path.rstrip("/")
    return path[:-3] if path.endswith("/v1") else path
