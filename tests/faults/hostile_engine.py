"""An engine that sends what a hostile or broken one could: `python -m tests.faults.hostile_engine --port N`.

Every route is `/<name>/metrics` (so a target URL names its exact metrics path) and answers at once:

| route | answer |
| --- | --- |
| `/fine` | vLLM 0.33's real /metrics (tests/fixtures/engines/vllm/v0.33.0-load.txt) |
| `/series` | 300,000 valid vLLM series (about 22 MB, Content-Length) |
| `/big` | 30 MB of valid vLLM series (about 410,000), chunked, no length announced |
| `/huge` | 40 MB, announced in its Content-Length |
| `/endless` | 40 MB in one line without a newline, chunked, no length announced |
| `/trickle` | vLLM's /metrics, one line every 0.2 s |
| `/values` | hostile values: NaN, +Inf and negative counters, a 1 MB label value, a password in a label |
| `/secret` | a broken line that quotes a URL with the password `hunter2` (it ends in an error message) |

`/health` answers 200 once every payload is built (about a second). Used by tests/faults and bench/.
"""

from __future__ import annotations

import argparse
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "engines" / "vllm" / "v0.33.0-load.txt"
SECRET = "hunter2"
LINE = 'vllm:num_requests_running{{engine="{e}",model_name="hostile-model-{i}"}} {i}.0\n'


def series(count: int) -> bytes:
    head = "# HELP vllm:num_requests_running Requests running.\n# TYPE vllm:num_requests_running gauge\n"
    return (head + "".join(LINE.format(e=i % 8, i=i) for i in range(count))).encode()


def of_size(size: int) -> bytes:
    body = series(size // 60 + 1)
    return body[: body.rindex(b"\n", 0, size) + 1]


HOSTILE_VALUES = (
    "# TYPE vllm:num_requests_running gauge\n"
    'vllm:num_requests_running{engine="0",model_name="m"} 2.0\n'
    f'vllm:num_requests_running{{engine="1",model_name="{"x" * 1_000_000}"}} 3.0\n'
    "# TYPE vllm:generation_tokens_total counter\n"
    'vllm:generation_tokens_total{engine="0",model_name="m"} NaN\n'
    'vllm:generation_tokens_total{engine="1",model_name="m"} -5.0\n'
    "# TYPE vllm:prompt_tokens_total counter\n"
    'vllm:prompt_tokens_total{engine="0",model_name="m"} +Inf\n'
    "# TYPE vllm:kv_cache_usage_perc gauge\n"
    f'vllm:kv_cache_usage_perc{{engine="0",model_name="http://admin:{SECRET}@db"}} 0.5\n'
).encode()


def payloads() -> dict[str, bytes]:
    return {
        "/fine": FIXTURE.read_bytes(),
        "/series": series(300_000),
        "/big": of_size(30_000_000),
        "/huge": b"# x\n" * 10_000_000,
        "/endless": b"#" * 40_000_000,
        "/trickle": FIXTURE.read_bytes(),
        "/values": HOSTILE_VALUES,
        "/secret": f"vllm:num_requests_running see http://admin:{SECRET}@db:5432/x\n".encode(),
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    bodies: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        route = self.path.split("?")[0].removesuffix("/metrics")
        if route == "/health" or route not in self.bodies:
            self._answer(200 if route == "/health" else 404, b"ok\n" if route == "/health" else b"no\n")
            return
        body = self.bodies[route]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        try:
            if route in ("/big", "/endless"):
                self._chunked(body)
            elif route == "/trickle":
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                for line in body.splitlines(keepends=True):
                    time.sleep(0.2)
                    self.wfile.write(line)
                    self.wfile.flush()
            else:
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the exporter stopped reading: over budget or past its deadline

    def _chunked(self, body: bytes) -> None:
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        view = memoryview(body)
        for start in range(0, len(body), 65536):
            piece = view[start : start + 65536]
            self.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    Handler.bodies = payloads()
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    threading.Event().wait()


if __name__ == "__main__":
    main()
