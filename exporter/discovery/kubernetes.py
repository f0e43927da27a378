"""The pods on this node, kept current by a list and a watch of the Kubernetes API (core/v1 pods).

One daemon thread follows the API's protocol for a consistent cache (kubernetes.io docs, "API concepts:
efficient detection of changes"), as client-go's Reflector does:
- list `GET /api/v1/pods?fieldSelector=spec.nodeName=<node>` in pages of 500, remember the list's
  resourceVersion, replace the whole cache with what it returned;
- watch from that resourceVersion with `allowWatchBookmarks=true` and `timeoutSeconds`: ADDED and
  MODIFIED replace a pod, DELETED removes it, BOOKMARK only moves the resourceVersion on; each event's
  resourceVersion is where the next watch starts when this one ends (the server ends it after
  `timeoutSeconds`, or the connection drops);
- `410 Gone` (the answer to the watch, or an ERROR event carrying a Status with code 410: the version is
  older than the server's history) clears the cache by listing again; so does an expired `continue`.
Any other failure is counted by kind (`connect`, `timeout`, `http_status`, `auth`, `protocol`,
`pod_limit`), logged when the state changes (failing, recovered), and retried after an exponential
backoff with jitter (0.5 s doubling to 30 s), from the last resourceVersion. As client-go's Reflector,
the loop never spins: a 410 that follows a list without a single event in between waits out the same
backoff before the next list, and a watch the server ends within a second without an event is a
failure (`protocol`), so an API server (or a proxy) that answers every watch at once is asked a few
times a minute, not thousands of times a second. The cache a reader sees is an immutable snapshot,
replaced whole, so readers never wait on the API.

Budgets: one event or list page at most 8 MiB, a list at most 100 pages, at most 1,000 pods (a node's
kubelet allows 110 by default; more are ignored and counted as `pod_limit`); only the fields in
`pods.Pod` are kept.

Credentials: in a pod, the service account's token (re-read for every request: projected tokens rotate)
and CA from /var/run/secrets/kubernetes.io/serviceaccount/, the API at $KUBERNETES_SERVICE_HOST:PORT.
The token goes only into the Authorization header; no error or log line carries it (one with a
character no header can carry is refused as `auth` without being shown: httpx's refusal quotes it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import re
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx

from exporter.discovery.pods import EngineTarget, Pod, engine_target, pod_from_api
from exporter.errors import ExporterError

log = logging.getLogger("exporter.kubernetes")
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
MAX_PODS = 1000
PAGE_SIZE = 500
MAX_PAGES = 100
SHORT_WATCH_SECONDS = 1.0  # a watch ended sooner, without an event, is a failure (client-go's rule)
_TOKEN = re.compile(r"[\x21-\x7e]+")  # what a bearer token in a header may hold
WATCH_SECONDS = 300
BACKOFF_SECONDS = (0.5, 30.0)


class WatchFailure(ExporterError):
    """A failed list or watch; `kind` is what it counts as."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Gone(Exception):
    """410 Gone: the resourceVersion is too old (or a continue token expired); list again. `events`: how
    many events the watch it ended had applied."""

    def __init__(self, events: int = 0) -> None:
        super().__init__("410 Gone")
        self.events = events


@dataclass(frozen=True)
class ApiSettings:
    """Where the API is and how to authenticate; `in_cluster()` reads a pod's service account."""

    url: str
    token_file: Path | None = None
    ca_file: Path | None = None

    @classmethod
    def in_cluster(cls, environ: Mapping[str, str]) -> ApiSettings:
        host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise WatchFailure("config", "KUBERNETES_SERVICE_HOST is not set: not running in a pod")
        host = f"[{host}]" if ":" in host else host
        return cls(f"https://{host}:{port}", SERVICE_ACCOUNT / "token", SERVICE_ACCOUNT / "ca.crt")


class PodWatcher:
    """The pods of one node. `start()` runs the list/watch thread; `pods()` is the latest snapshot
    (uid -> Pod), `synced()` says whether the first list has completed, `engine_targets()` the opted-in
    engines, `error_counts()` the failures by kind, `relists` how often 410 Gone forced a new list."""

    def __init__(
        self,
        settings: ApiSettings,
        node: str,
        *,
        max_pods: int = MAX_PODS,
        watch_seconds: int = WATCH_SECONDS,
        backoff_seconds: tuple[float, float] = BACKOFF_SECONDS,
    ) -> None:
        self.settings, self.node = settings, node
        self.max_pods, self.watch_seconds, self.backoff_seconds = max_pods, watch_seconds, backoff_seconds
        self.relists = 0
        self._errors: Counter[str] = Counter()
        self._pods: Mapping[str, Pod] = MappingProxyType({})
        self._version: str | None = None
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._failing = False
        self._reported: dict[str, str] = {}  # uid -> the opt-in problem last logged
        self._open_watch: httpx.Response | None = None
        self._thread = threading.Thread(target=self._run, name="kubernetes-pods", daemon=True)

    # -- readers ------------------------------------------------------------------------------------------

    def pods(self) -> Mapping[str, Pod]:
        return self._pods

    def synced(self) -> bool:
        return self._synced.is_set()

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    def error_counts(self) -> dict[str, int]:
        return dict(self._errors)

    def engine_targets(self) -> list[EngineTarget]:
        """The opted-in running pods as targets, sorted by name; each unusable opt-in is logged once."""
        targets = []
        for pod in self._pods.values():
            found = engine_target(pod)
            if isinstance(found, EngineTarget):
                targets.append(found)
            elif isinstance(found, str) and self._reported.get(pod.uid) != found:
                self._reported[pod.uid] = found
                log.warning("pod %s/%s is not scraped: %s", pod.namespace, pod.name, found)
        for uid in set(self._reported) - set(self._pods):
            del self._reported[uid]
        return sorted(targets, key=lambda t: t.name)

    # -- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> PodWatcher:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        _shut_down(self._open_watch)  # a watch blocked in a read returns at once
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    # -- the loop -----------------------------------------------------------------------------------------

    def _run(self) -> None:
        low, high = self.backoff_seconds
        delay = low
        gone_without_events = False  # the last list was followed by 410 before any event
        with self._new_client() as client:
            while not self._stop.is_set():
                try:
                    if self._version is None:
                        self._relist(client)
                    started = time.monotonic()
                    events = self._watch(client)
                    if events:
                        gone_without_events = False
                    elif time.monotonic() - started < SHORT_WATCH_SECONDS and not self._stop.is_set():
                        raise WatchFailure("protocol", "a watch ended at once, with no event")
                    delay = low
                except Gone as gone:
                    self._version = None
                    self.relists += 1
                    log.info("kubernetes: resourceVersion expired (410 Gone); listing the node's pods again")
                    if gone.events:
                        gone_without_events = False
                    if gone_without_events:  # 410 again right after a list: the server's fault, not ours
                        self._stop.wait(delay * random.uniform(0.8, 1.2))
                        delay = min(delay * 2, high)
                    gone_without_events = True
                except WatchFailure as exc:
                    self._failed(exc)
                    self._stop.wait(delay * random.uniform(0.8, 1.2))
                    delay = min(delay * 2, high)
                except Exception as exc:  # never let the thread die: count, back off, go on
                    if not self._stop.is_set():
                        log.exception("kubernetes: unexpected failure")
                        self._failed(WatchFailure("protocol", f"{type(exc).__name__}: {exc}"))
                        self._stop.wait(delay)
                        delay = min(delay * 2, high)

    def _failed(self, exc: WatchFailure) -> None:
        if self._stop.is_set():
            return
        self._errors[exc.kind] += 1
        if not self._failing:
            log.warning("kubernetes: watching pods on node %s failed: %s: %s", self.node, exc.kind, exc)
        self._failing = True

    def _recovered(self) -> None:
        if self._failing:
            log.info("kubernetes: watching pods on node %s again", self.node)
        self._failing = False

    def _relist(self, client: httpx.Client) -> None:
        pods: dict[str, Pod] = {}
        params = {"fieldSelector": f"spec.nodeName={self.node}", "limit": str(PAGE_SIZE)}
        version = ""
        for _ in range(MAX_PAGES):
            page = self._get_json(client, params)
            meta = page.get("metadata") or {}
            version = version or str(meta.get("resourceVersion") or "")
            for item in page.get("items") or ():
                self._put(pods, pod_from_api(item))
            token = meta.get("continue")
            if not token:
                break
            params = {**params, "continue": str(token)}
        else:
            raise WatchFailure("protocol", f"the pod list did not end after {MAX_PAGES} pages")
        if not version:
            raise WatchFailure("protocol", "the pod list carries no resourceVersion")
        self._pods = MappingProxyType(pods)
        self._version = version
        self._synced.set()
        self._recovered()

    def _watch(self, client: httpx.Client) -> int:
        """Follow one watch until it ends; the number of events it applied."""
        params = {
            "fieldSelector": f"spec.nodeName={self.node}",
            "watch": "1",
            "resourceVersion": str(self._version),
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self.watch_seconds),
        }
        applied = 0
        with self._request(client, params) as response:
            self._open_watch = response
            try:
                if self._stop.is_set():  # close() ran before it could see this watch
                    return applied
                self._recovered()
                for line in _lines(response.iter_bytes(), MAX_MESSAGE_BYTES):
                    if self._stop.is_set():
                        return applied
                    try:
                        self._apply(_json(line))
                    except Gone:
                        raise Gone(applied) from None
                    applied += 1
            finally:
                self._open_watch = None
        return applied

    def _apply(self, event: Mapping[str, Any]) -> None:
        kind, obj = event.get("type"), event.get("object")
        if not isinstance(obj, Mapping):
            raise WatchFailure("protocol", f"watch event {kind!r} without an object")
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone()
            raise WatchFailure(
                "http_status", f"watch error: {obj.get('code')} {obj.get('message', '')}"[:300]
            )
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            pod = pod_from_api(obj)
            pods = dict(self._pods)
            if kind == "DELETED":
                pods.pop(pod.uid, None)
            else:
                self._put(pods, pod)
            self._pods = MappingProxyType(pods)
        elif kind != "BOOKMARK":
            raise WatchFailure("protocol", f"unknown watch event type {kind!r}")
        if version:
            self._version = str(version)

    def _put(self, pods: dict[str, Pod], pod: Pod) -> None:
        if pod.node and pod.node != self.node:
            pods.pop(pod.uid, None)  # the field selector should not let it through; never trust it blindly
        elif pod.uid in pods or len(pods) < self.max_pods:
            pods[pod.uid] = pod
        else:
            self._errors["pod_limit"] += 1

    # -- HTTP ---------------------------------------------------------------------------------------------

    def _new_client(self) -> httpx.Client:
        verify: ssl.SSLContext | bool = True
        if self.settings.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(self.settings.ca_file))
        timeout = httpx.Timeout(10.0, read=self.watch_seconds + 30.0)
        return httpx.Client(base_url=self.settings.url, verify=verify, timeout=timeout, trust_env=False)

    def _headers(self) -> dict[str, str]:
        if self.settings.token_file is None:
            return {"Accept": "application/json"}
        try:
            token = self.settings.token_file.read_text().strip()
        except OSError as exc:
            raise WatchFailure("auth", f"cannot read the service account token: {exc.strerror}") from None
        if not _TOKEN.fullmatch(token):
            raise WatchFailure(
                "auth", "the service account token holds a character no HTTP header can carry (not shown)"
            )
        return {"Accept": "application/json", "Authorization": f"Bearer {token}"}

    def _request(self, client: httpx.Client, params: Mapping[str, str]) -> _Response:
        return _Response(client, params, self._headers())

    def _get_json(self, client: httpx.Client, params: Mapping[str, str]) -> Mapping[str, Any]:
        with self._request(client, params) as response:
            body = b"".join(_capped(response.iter_bytes(), MAX_MESSAGE_BYTES))
        document = _json(body)
        if document.get("kind") not in (None, "PodList"):
            raise WatchFailure("protocol", f"expected a PodList, got {document.get('kind')!r}")
        return document


class _Response:
    """GET /api/v1/pods as a context manager: status codes mapped to Gone or WatchFailure kinds."""

    def __init__(self, client: httpx.Client, params: Mapping[str, str], headers: Mapping[str, str]) -> None:
        self._context = client.stream("GET", "/api/v1/pods", params=params, headers=headers)

    def __enter__(self) -> httpx.Response:
        try:
            response = self._context.__enter__()
        except httpx.TimeoutException as exc:
            raise WatchFailure("timeout", type(exc).__name__) from None
        except httpx.HTTPError as exc:
            raise WatchFailure("connect", f"{type(exc).__name__}: {exc}"[:300]) from None
        if response.status_code == 200:
            return response
        self._context.__exit__(None, None, None)
        status = response.status_code
        if status == 410:
            raise Gone()
        if status in (401, 403):
            raise WatchFailure("auth", f"{status}: the service account may not list pods (RBAC)")
        raise WatchFailure("http_status", f"HTTP {status}")

    def __exit__(self, *exc_info: object) -> None:
        with contextlib.suppress(httpx.HTTPError):
            self._context.__exit__(*exc_info)


def _shut_down(response: httpx.Response | None) -> None:
    """Shut the socket of a streaming response down (closing the client would not wake a blocked read)."""
    stream = response.extensions.get("network_stream") if response is not None else None
    sock = stream.get_extra_info("socket") if stream is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _capped(chunks: Iterator[bytes], limit: int) -> Iterator[bytes]:
    total = 0
    for chunk in _reading(chunks):
        total += len(chunk)
        if total > limit:
            raise WatchFailure("protocol", f"a response over {limit} bytes")
        yield chunk


def _lines(chunks: Iterator[bytes], limit: int) -> Iterator[bytes]:
    """Newline-delimited JSON events; a line longer than `limit` is a protocol failure."""
    buffer = bytearray()
    for chunk in _reading(chunks):
        buffer += chunk
        while (end := buffer.find(b"\n")) >= 0:
            line = bytes(buffer[:end]).strip()
            del buffer[: end + 1]
            if line:
                yield line
        if len(buffer) > limit:
            raise WatchFailure("protocol", f"a watch event over {limit} bytes")
    if buffer.strip():
        yield bytes(buffer).strip()


def _reading(chunks: Iterator[bytes]) -> Iterator[bytes]:
    try:
        yield from chunks
    except httpx.TimeoutException as exc:
        raise WatchFailure("timeout", type(exc).__name__) from None
    except httpx.HTTPError as exc:
        raise WatchFailure("connect", f"{type(exc).__name__}: {exc}"[:300]) from None


def _json(data: bytes) -> Mapping[str, Any]:
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise WatchFailure("protocol", f"not JSON: {exc}"[:300]) from None
    if not isinstance(document, Mapping):
        raise WatchFailure("protocol", f"expected a JSON object, got {type(document).__name__}")
    return document


PodsSource = Callable[[], Mapping[str, Pod]]

__all__ = ["ApiSettings", "PodWatcher", "PodsSource", "WatchFailure"]
