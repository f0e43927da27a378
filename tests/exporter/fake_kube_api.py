"""A fake Kubernetes API server for the pod list and watch (no real API server can run here).

It answers only `GET /api/v1/pods` with the shapes of the published API (tests/fixtures/kubernetes/README.md):
a paged `PodList` (`limit`, `continue`, `metadata.resourceVersion`), and with `watch=1` a chunked stream
of newline-delimited watch events from `resourceVersion` on: ADDED/MODIFIED/DELETED as the test changes
pods, BOOKMARK when the test asks (only with `allowWatchBookmarks=true`), and for a resourceVersion
older than the history kept either HTTP 410 or an ERROR event with a 410 `Status` (the test chooses).
It filters by `fieldSelector=spec.nodeName=...` as the API does, and records every request's query.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

GONE_STATUS = {
    "kind": "Status",
    "apiVersion": "v1",
    "metadata": {},
    "status": "Failure",
    "message": "too old resource version",
    "reason": "Expired",
    "code": 410,
}


class FakeKubeApi:
    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.version = 100
        self.pods: dict[str, dict] = {}  # uid -> pod object
        self.history: list[tuple[int, dict]] = []  # (resourceVersion, event)
        self.oldest = 0  # watches from a version below this are expired
        self.gone_as_event = True  # 410 as an ERROR event in a 200 stream, else as HTTP 410
        self.requests: list[dict[str, str]] = []
        self.status_override: int | None = None  # answer every request with this status
        self.end_watches_at_once = False  # a proxy that closes every watch before any event
        self.endless_list = False  # every list page names a next page
        self._generation = 0  # bumped to end open watches
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeKubeApi:
        self._thread.start()
        return self

    def close(self) -> None:
        self.drop_watches()
        self.server.shutdown()
        self.server.server_close()

    # -- what the test does -----------------------------------------------------------------------------

    def put(self, pod: Mapping[str, Any]) -> str:
        """Create or replace a pod (ADDED or MODIFIED); returns its resourceVersion."""
        with self.lock:
            obj = copy.deepcopy(dict(pod))
            uid = obj["metadata"]["uid"]
            kind = "MODIFIED" if uid in self.pods else "ADDED"
            return self._event(kind, obj, store=True)

    def delete(self, uid: str) -> str:
        with self.lock:
            obj = self.pods.pop(uid)
            return self._event("DELETED", obj, store=False)

    def bookmark(self) -> str:
        with self.lock:
            self.version += 1
            obj = {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": str(self.version)}}
            self.history.append((self.version, {"type": "BOOKMARK", "object": obj}))
            self.lock.notify_all()
            return str(self.version)

    def compact(self) -> None:
        """Forget the history: every watch from an older version is now expired (410)."""
        with self.lock:
            self.oldest = self.version + 1
            self.history.clear()

    def drop_watches(self) -> None:
        with self.lock:
            self._generation += 1
            self.lock.notify_all()

    def watches(self) -> list[dict[str, str]]:
        return [r for r in self.requests if r.get("watch") in ("1", "true", "True")]

    def lists(self) -> list[dict[str, str]]:
        return [r for r in self.requests if r.get("watch") not in ("1", "true", "True")]

    # -- internals --------------------------------------------------------------------------------------

    def _event(self, kind: str, obj: dict, store: bool) -> str:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        if store:
            self.pods[obj["metadata"]["uid"]] = obj
        self.history.append((self.version, {"type": kind, "object": copy.deepcopy(obj)}))
        self.lock.notify_all()
        return str(self.version)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                query["authorization"] = self.headers.get("Authorization", "")
                api.requests.append(query)
                if parts.path != "/api/v1/pods":
                    return self._json(404, {"kind": "Status", "code": 404})
                if api.status_override is not None:
                    return self._json(api.status_override, {"kind": "Status", "code": api.status_override})
                node = query.get("fieldSelector", "").removeprefix("spec.nodeName=")
                if query.get("watch") in ("1", "true", "True"):
                    return self._watch(node, int(query.get("resourceVersion") or 0), query)
                return self._list(node, query)

            def _selected(self, obj: dict, node: str) -> bool:
                return not node or obj.get("spec", {}).get("nodeName") == node

            def _list(self, node: str, query: dict[str, str]) -> None:
                with api.lock:
                    items = [p for p in api.pods.values() if self._selected(p, node)]
                    version = str(api.version)
                start = int(query.get("continue") or 0)
                limit = int(query.get("limit") or len(items) or 1)
                page = items[start : start + limit]
                more = start + limit < len(items) or api.endless_list
                meta = {"resourceVersion": version, **({"continue": str(start + limit)} if more else {})}
                self._json(200, {"kind": "PodList", "apiVersion": "v1", "metadata": meta, "items": page})

            def _watch(self, node: str, since: int, query: dict[str, str]) -> None:
                with api.lock:
                    expired = since < api.oldest
                    generation = api._generation
                if expired and not api.gone_as_event:
                    return self._json(410, GONE_STATUS)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                if expired:
                    self._chunk({"type": "ERROR", "object": GONE_STATUS})
                    return self._end()
                if api.end_watches_at_once:
                    return self._end()
                bookmarks = query.get("allowWatchBookmarks") in ("true", "True")
                sent = since
                while True:
                    with api.lock:
                        pending = [(v, e) for v, e in api.history if v > sent]
                        if not pending and api._generation == generation:
                            api.lock.wait(0.2)
                            pending = [(v, e) for v, e in api.history if v > sent]
                        if api._generation != generation:
                            return self._end()
                    for version, event in pending:
                        sent = version
                        if event["type"] == "BOOKMARK" and not bookmarks:
                            continue
                        if event["type"] != "BOOKMARK" and not self._selected(event["object"], node):
                            continue
                        try:
                            self._chunk(event)
                        except OSError:
                            return

            def _chunk(self, event: dict) -> None:
                data = json.dumps(event).encode() + b"\n"
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _end(self) -> None:
                try:
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except OSError:
                    pass
                self.close_connection = True

            def _json(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
