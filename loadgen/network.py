"""How requests reach the server: which transport, TLS verification, proxies, and so how they are timed.

Plain HTTP without a proxy goes through the lean pool of transport.py, whose reads carry the kernel's
receive timestamps. HTTPS, and anything sent through a proxy, goes through httpx's own transport; its
times are taken when the client reads. The report says which (`timing_path`).

TLS: the server's certificate is verified against certifi's CA bundle, or SSL_CERT_FILE /
SSL_CERT_DIR when set, or `--ca-file` (a PEM bundle, for a private CA); `--insecure` turns
verification off, and has to be asked for. Proxies: the environment's (HTTP_PROXY, HTTPS_PROXY,
ALL_PROXY, NO_PROXY, in either case) only with `--proxy-from-env`; a benchmark that silently went
through a proxy would time the proxy.
"""

from __future__ import annotations

import ssl
import urllib.request
from dataclasses import dataclass

import httpx

from loadgen import redact
from loadgen.connection import TIMESTAMPS
from loadgen.errors import ClientError
from loadgen.transport import StackPoolTransport

__all__ = ["Network", "Route", "route"]

KERNEL_TIMING = "kernel receive timestamps (plain HTTP, lean pool)"
CLIENT_TIMING = "client read time (httpx transport: {why}); no kernel timestamps"


@dataclass(frozen=True, kw_only=True)
class Network:
    ca_file: str | None = None  # PEM CA bundle to verify HTTPS servers against
    insecure: bool = False  # no certificate verification at all (explicit opt-in)
    proxy_from_env: bool = False  # use HTTP_PROXY/HTTPS_PROXY/ALL_PROXY/NO_PROXY

    def proxy_for(self, url: httpx.URL) -> str | None:
        """The environment's proxy for `url`, when proxies from the environment are wanted."""
        if not self.proxy_from_env:
            return None
        proxies = urllib.request.getproxies_environment()
        if urllib.request.proxy_bypass_environment(url.host, proxies):
            return None
        proxy = proxies.get(url.scheme) or proxies.get("all")
        if proxy:
            redact.register_url(proxy)
        return proxy or None

    def verify(self) -> ssl.SSLContext | bool:
        if self.insecure:
            return False
        if self.ca_file:
            try:
                return ssl.create_default_context(cafile=self.ca_file)
            except (OSError, ssl.SSLError) as exc:
                reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
                message = f"--ca-file {self.ca_file}: cannot be read as PEM certificates ({reason})"
                raise ClientError(message) from None
        return True


@dataclass(frozen=True)
class Route:
    transport: httpx.AsyncBaseTransport
    raw: StackPoolTransport | None  # the lean pool, when it carries the load
    timing_path: str


def route(base: httpx.URL, network: Network, max_connections: int) -> Route:
    """The transport for a base URL: the lean pool for plain HTTP without a proxy, else httpx's."""
    proxy = network.proxy_for(base)
    if base.scheme == "http" and proxy is None:
        pool = StackPoolTransport(max_connections)
        timing = KERNEL_TIMING if TIMESTAMPS else CLIENT_TIMING.format(why="no SO_TIMESTAMPNS here")
        return Route(pool, pool, timing)
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    transport = httpx.AsyncHTTPTransport(verify=network.verify(), limits=limits, proxy=proxy)
    why = "through a proxy" if proxy else "HTTPS"
    return Route(transport, None, CLIENT_TIMING.format(why=why))
