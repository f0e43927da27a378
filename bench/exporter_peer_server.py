#!/usr/bin/env python3
"""Our exporter's app served by a well-kept Python server instead of ours (for bench/exporter_hardening.py).

    python3 bench/exporter_peer_server.py uvicorn --listen-address 127.0.0.1:9840 --target sim=URL,kind=vllm
    python3 bench/exporter_peer_server.py waitress ...                 # needs `pip install waitress`

The same Exporter (build_exporter) and WSGI app (make_app) as `python -m exporter`, so only the HTTP server
differs. uvicorn runs the WSGI app through its own WSGIMiddleware (a thread pool), keep-alive timeout 30 s
as ours; waitress with 8 threads, 512 connections and channel_timeout 30 s (our idle timeout, our cap).
"""

from __future__ import annotations

import sys

from exporter.config import load_config
from exporter.registry import build_exporter
from exporter.server import make_app
from exporter.web_config import WebConfig


def main() -> None:
    server, argv = sys.argv[1], sys.argv[2:]
    config = load_config(argv)
    host, port = config.listen_host_port
    app = make_app(build_exporter(config), WebConfig())
    print(f"serving with {server} on {host}:{port}", flush=True)
    if server == "uvicorn":
        import uvicorn
        from uvicorn.middleware.wsgi import WSGIMiddleware

        uvicorn.run(WSGIMiddleware(app), host=host, port=port, log_level="warning", timeout_keep_alive=30)
    elif server == "waitress":
        import waitress

        waitress.serve(app, host=host, port=port, threads=8, connection_limit=512, channel_timeout=30)
    else:
        raise SystemExit(f"unknown server {server!r}: uvicorn or waitress")


if __name__ == "__main__":
    main()
