"""A small Prometheus HTTP API client with budgets, for the snapshot and the reports.

    prom = Prometheus("http://user:pass@host:9090", Budget(timeout_s=10, deadline_s=120))
    prom.check()                                   # Unreachable with the reason, or the server's version
    prom.query_range('up', start, end, step)       # [Series(labels, points)]

Errors form one tree (`PrometheusError`): `Unreachable` (no answer at all: refused, DNS, TLS, timeout on
the first call), `QueryFailed` (Prometheus answered with an error, or not with its API's JSON) and
`BudgetExceeded` (a response larger than `max_bytes`, or the whole job past `deadline_s`). Each message
names the URL without its credentials (`safe_url`), and every message leaves through `_scrub`, which takes
out the password and the bearer token wherever they appear (an HTTP library's error may quote a header):
userinfo in the URL (percent-decoded) becomes basic auth, a bearer token is passed separately, and a
credential that no header can carry (a control character) is refused without being shown. Queries go as
POST forms, so long expressions are not limited by URL length.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import time
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from grafana.errors import GrafanaError

__all__ = [
    "Budget",
    "BudgetExceeded",
    "Prometheus",
    "PrometheusError",
    "QueryFailed",
    "Series",
    "Unreachable",
    "safe_url",
    "token_from_env",
]


class PrometheusError(GrafanaError):
    """Prometheus could not be used (grafana/errors.py draws the tree)."""


class Unreachable(PrometheusError):
    pass


class QueryFailed(PrometheusError):
    pass


class BudgetExceeded(PrometheusError):
    pass


@dataclass(frozen=True)
class Budget:
    timeout_s: float = 10.0  # one request
    deadline_s: float = 180.0  # every request of one job together
    max_bytes: int = 8 * 1024 * 1024  # one response body
    max_series: int = 50  # per panel (the caller keeps the first ones and says how many were left out)


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    points: list[tuple[float, float]]  # (unix s, value); NaN and ±Inf kept as floats


_HEADER_SAFE = re.compile(r"[\x20-\x7e]*")  # what an HTTP header value may carry


def safe_url(url: str) -> str:
    """The URL as it may be shown: no user or password, no query string (tokens hide there too)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # a port that is no number, out of range, a broken [IPv6] host
        raise PrometheusError(f"--prometheus is not a usable URL ({exc})") from None
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{port}" if port else "")
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def token_from_env(variable: str | None) -> str | None:
    """The bearer token in environment variable `variable` (None when no variable is named)."""
    if not variable:
        return None
    token = os.environ.get(variable, "")
    if not token:
        raise PrometheusError(f"--prometheus-token-env {variable}: the variable is empty or not set")
    return token


class Prometheus:
    def __init__(self, url: str, budget: Budget | None = None, token: str | None = None) -> None:
        self.url = safe_url(url)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PrometheusError(f"not an http(s) URL: {self.url!r}")
        self.budget = budget or Budget()
        user, password = unquote(parts.username or ""), unquote(parts.password or "")
        basic = base64.b64encode(f"{user}:{password}".encode()).decode() if password else ""
        self._secrets = sorted({s for s in (password, basic, token or "") if s}, key=len, reverse=True)
        if not all(_HEADER_SAFE.fullmatch(s) for s in (user, password, token or "")):
            raise PrometheusError(
                f"{self.url}: the user, password or token holds a character no HTTP header can carry "
                "(a line break?); it is not shown"
            )
        auth = httpx.BasicAuth(user, password) if parts.username else None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(auth=auth, headers=headers, follow_redirects=False)
        self._started = time.monotonic()
        self._answered = False  # a timeout after the first answer is a slow query, not an absent server

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Prometheus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- API -------------------------------------------------------------------------------------

    def check(self) -> str:
        """The server's version; Unreachable when nothing answers, QueryFailed when it is no Prometheus."""
        try:
            data = self._call("GET", "/api/v1/status/buildinfo", {})
        except QueryFailed as exc:
            raise Unreachable(f"{self.url} does not answer as Prometheus does: {exc}") from None
        return str(data.get("version", "unknown"))

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        data = self._call(
            "POST", "/api/v1/query_range", {"query": expr, "start": start, "end": end, "step": step}
        )
        return [
            Series(dict(item.get("metric", {})), [(float(t), _number(v)) for t, v in item.get("values", [])])
            for item in _result(data, "matrix")
        ]

    def query(self, expr: str, at: float) -> list[Series]:
        data = self._call("POST", "/api/v1/query", {"query": expr, "time": at})
        return [
            Series(dict(item.get("metric", {})), [(float(item["value"][0]), _number(item["value"][1]))])
            for item in _result(data, "vector")
        ]

    def label_values(self, label: str, match: str, start: float, end: float) -> list[str]:
        params = {"match[]": match, "start": start, "end": end}
        data = self._call("GET", f"/api/v1/label/{label}/values", params)
        if not isinstance(data, list):
            raise QueryFailed(f"label values of {label!r}: not a list")
        return [str(value) for value in data]

    # -- transport -------------------------------------------------------------------------------

    def _remaining(self) -> float:
        left = self.budget.deadline_s - (time.monotonic() - self._started)
        if left <= 0:
            raise BudgetExceeded(
                f"the time budget of {self.budget.deadline_s:g} s for Prometheus queries is spent"
            )
        return left

    def _scrub(self, text: str) -> str:
        """`text` without this client's password (plain or in its Basic header) or token, as given or as
        a header quotes them."""
        for secret in self._secrets:
            text = text.replace(secret, "<redacted>").replace(repr(secret)[1:-1], "<redacted>")
        return text

    def _call(self, method: str, path: str, params: dict) -> object:
        try:
            return self._exchange(method, path, params)
        except PrometheusError as exc:
            raise type(exc)(self._scrub(exc.message)) from None  # scrubbed whole, then bounded

    def _exchange(self, method: str, path: str, params: dict) -> object:
        timeout = min(self.budget.timeout_s, self._remaining())
        body = bytearray()
        try:
            kwargs = {"data": params} if method == "POST" else {"params": params}
            with self._client.stream(method, self.url + path, timeout=timeout, **kwargs) as response:
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > self.budget.max_bytes:
                        raise BudgetExceeded(
                            f"answer larger than {self.budget.max_bytes:,} bytes (raise --max-bytes, "
                            "or narrow the query or the time range)"
                        )
                status = response.status_code
        except httpx.TimeoutException:
            raise (Unreachable if not self._answered else QueryFailed)(
                f"{self.url}: no answer within {timeout:.3g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise Unreachable(f"cannot reach Prometheus at {self.url}: {_reason(exc)}") from None
        self._answered = True
        try:
            payload = json.loads(body)
        except ValueError:
            raise QueryFailed(f"HTTP {status} from {self.url}{path}, not JSON") from None
        if not isinstance(payload, dict) or payload.get("status") != "success":
            error = payload.get("error") if isinstance(payload, dict) else None
            raise QueryFailed(f"HTTP {status}: {str(error or 'no error message')[:300]}")
        return payload.get("data")


def _result(data: object, kind: str) -> list[dict]:
    if (
        not isinstance(data, dict)
        or data.get("resultType") != kind
        or not isinstance(data.get("result"), list)
    ):
        raise QueryFailed(f"expected a {kind} result")
    return data["result"]


def _number(text: object) -> float:
    try:
        return float(text)  # Prometheus writes "NaN", "+Inf", "-Inf" as strings, which float() reads
    except (TypeError, ValueError):
        return math.nan


def _reason(exc: httpx.HTTPError) -> str:
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    while cause is not None and not str(cause):
        cause = cause.__cause__ or cause.__context__
    if cause is None or str(cause) in text:
        return text[:300]
    return f"{text} ({cause})"[:300]
