"""TLS towards one engine target: its SSLContext, built once at start from the target's options.

Like Prometheus's `tls_config`: `ca_file` (PEM; replaces the default CAs), `cert_file` + `key_file` (a
client certificate), `server_name` (the name the certificate must carry, and the SNI sent; for a target
reached by address), `insecure_skip_verify` (no verification at all, only when asked by name). A target
without any of them verifies against certifi's CAs, as httpx does by default.
"""

from __future__ import annotations

import functools
import ssl
from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class TlsOptions:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False

    def context(self) -> ssl.SSLContext:
        """Raises OSError or ssl.SSLError for a file that is missing or not PEM of the right kind."""
        if self == TlsOptions():
            return _default_context()
        if self.ca_file and not self.insecure_skip_verify:
            context = ssl.create_default_context(cafile=self.ca_file)
        else:
            context = httpx.create_ssl_context(verify=not self.insecure_skip_verify)
        if self.insecure_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context


@functools.cache
def _default_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()  # loading certifi's CAs costs ~10 ms: once per process


__all__ = ["TlsOptions"]
