"""TLS and basic auth from an exporter-toolkit web config file (the format node_exporter reads).

Supported: tls_server_config (cert_file, key_file, client_auth_type, client_ca_file, min_version,
max_version) and basic_auth_users (user: bcrypt hash). Anything else in the file is rejected by name
rather than silently ignored. The file is read once at start (exporter-toolkit re-reads it per request).
"""

from __future__ import annotations

import base64
import hashlib
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from exporter.config import ConfigError
from exporter.settings import yaml_problem

_TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version"}
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# Checked for a user that does not exist, so that an unknown name costs what a wrong password does (as
# exporter-toolkit does): a quick 401 would tell which user names exist.
_NO_SUCH_USER_HASH = b"$2b$10$yCmaFFqLH3BLBl6TAhb/R.uk0HExh3Zsql0x8wk.PdIvneJHuwRHW"
# bcrypt checks at once. Each costs ~60 ms of CPU (cost 10); a flood of wrong passwords once held every
# worker thread with them, and a scrape with good (cached) credentials waited behind them (300 such
# clients: no answer in 30 s). Past this, a check is refused (401) without running.
MAX_CONCURRENT_CHECKS = 2


@dataclass
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)  # user -> bcrypt hash
    _verified: set[bytes] = field(default_factory=set)  # digests of (user, password, hash) already checked
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _checking: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(MAX_CONCURRENT_CHECKS)
    )

    @property
    def auth_required(self) -> bool:
        return bool(self.users)

    def check_authorization(self, header: str | None) -> bool:
        """True when auth is off, or the Basic credentials match a user's bcrypt hash."""
        if not self.users:
            return True
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        if len(password.encode()) > 72:  # bcrypt reads 72 bytes; bcrypt 5 raises past them (a 500 each)
            return False
        hashed = self.users.get(user)
        # bcrypt costs ~60 ms at cost 10; like exporter-toolkit, remember successful checks (digests only).
        digest = hashlib.sha256(b"\0".join([user.encode(), password.encode(), hashed or b""])).digest()
        with self._lock:
            if hashed is not None and digest in self._verified:
                return True
        import bcrypt

        if not self._checking.acquire(blocking=False):
            return False  # MAX_CONCURRENT_CHECKS are running: refused without one more
        try:
            matches = bcrypt.checkpw(password.encode(), hashed or _NO_SUCH_USER_HASH)
        finally:
            self._checking.release()
        if hashed is None or not matches:
            return False
        with self._lock:
            if len(self._verified) > 1024:
                self._verified.clear()
            self._verified.add(digest)
        return True


def load_web_config(path: Path | None) -> WebConfig:
    if path is None:
        return WebConfig()
    where = str(path)
    try:
        document = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read the web config file: {exc.strerror or exc}") from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise ConfigError(f"{where}: not valid YAML: {yaml_problem(exc)}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{where}: the top level must be a mapping")
    unknown = sorted(set(document) - {"tls_server_config", "basic_auth_users"})
    if unknown:
        raise ConfigError(
            f"{where}: {', '.join(map(str, unknown))} not supported by this exporter "
            "(supported: tls_server_config, basic_auth_users)"
        )
    config = WebConfig()
    if document.get("tls_server_config") is not None:
        config.ssl_context = _ssl_context(document["tls_server_config"], where, Path(path).parent)
    if document.get("basic_auth_users") is not None:
        config.users = _users(document["basic_auth_users"], where)
    return config


def _ssl_context(tls: Any, where: str, base: Path) -> ssl.SSLContext:
    if not isinstance(tls, dict):
        raise ConfigError(f"{where}: tls_server_config must be a mapping")
    unknown = sorted(set(tls) - _TLS_KEYS)
    if unknown:
        raise ConfigError(
            f"{where}: tls_server_config: {', '.join(map(str, unknown))} not supported "
            f"(supported: {', '.join(sorted(_TLS_KEYS))}; inline cert/key are not)"
        )
    if not tls.get("cert_file") or not tls.get("key_file"):
        raise ConfigError(f"{where}: tls_server_config needs both cert_file and key_file")
    cert, key = base / str(tls["cert_file"]), base / str(tls["key_file"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"{where}: cannot load cert_file {str(cert)!r} / key_file {str(key)!r}: {exc}"
        ) from None
    for name, attribute, default in (
        ("min_version", "minimum_version", "TLS12"),
        ("max_version", "maximum_version", None),
    ):
        value = tls.get(name, default)
        if value is None:
            continue
        if value not in _VERSIONS:
            raise ConfigError(
                f"{where}: tls_server_config {name} {value!r} is not one of {', '.join(_VERSIONS)}"
            )
        setattr(context, attribute, _VERSIONS[value])
    auth_type = tls.get("client_auth_type", "NoClientCert")
    if auth_type not in _CLIENT_AUTH:
        raise ConfigError(f"{where}: client_auth_type {auth_type!r} is not one of {', '.join(_CLIENT_AUTH)}")
    context.verify_mode = _CLIENT_AUTH[auth_type]
    if auth_type != "NoClientCert":
        if not tls.get("client_ca_file"):
            raise ConfigError(f"{where}: client_auth_type {auth_type} needs client_ca_file")
        try:
            context.load_verify_locations(base / str(tls["client_ca_file"]))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{where}: cannot load client_ca_file: {exc}") from None
    return context


def _users(users: Any, where: str) -> dict[str, bytes]:
    if not isinstance(users, dict) or not users:
        raise ConfigError(f"{where}: basic_auth_users must be a non-empty mapping of user: bcrypt hash")
    try:
        import bcrypt  # noqa: F401 - fail at start, not on the first request
    except ImportError:
        raise ConfigError(
            f"{where}: basic_auth_users needs the bcrypt package (pip install bcrypt)"
        ) from None
    result = {}
    for user, hashed in users.items():
        text = str(hashed or "")
        if ":" in str(user) or not str(user):
            raise ConfigError(f"{where}: basic_auth_users: user name {user!r} is empty or contains ':'")
        if not text.startswith(("$2a$", "$2b$", "$2y$")) or len(text) != 60:
            # the hash itself is never echoed: it is a secret of sorts
            raise ConfigError(
                f"{where}: basic_auth_users: the entry for {user!r} is not a bcrypt hash ($2b$...)"
            )
        result[str(user)] = text.encode()
    return result


__all__ = ["WebConfig", "load_web_config"]
