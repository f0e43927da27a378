"""Secrets a person configures (the API key, the control API's token): read from a file or an
environment variable, checked to be sendable in a header, and registered for redaction (redact.py)
before anything can print them. Messages name where a secret comes from, never the secret."""

from __future__ import annotations

import os
from pathlib import Path

from loadgen import redact
from loadgen.client import check_header_value
from loadgen.errors import ScenarioError

__all__ = ["read_secret"]


def read_secret(env: str | None, file: str | None, what: str) -> str | None:
    """A secret (API key, control token) from a file or an environment variable, stripped; it must
    be printable ASCII, as it is sent in a header. Messages name where it comes from, never it."""
    if file:
        try:
            secret = Path(file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise ScenarioError(f"cannot read the {what} file {file}: {reason}") from exc
        if not secret:
            raise ScenarioError(f"the {what} file {file} is empty")
    elif env:
        secret = os.environ.get(env, "").strip()
        if not secret:
            raise ScenarioError(f"environment variable {env} ({what}) is not set")
    else:
        return None
    try:
        check_header_value(secret, f"the {what} from {file or env}")
    except ValueError as exc:
        raise ScenarioError(str(exc)) from None
    redact.register(secret)
    return secret
