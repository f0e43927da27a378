"""`python -m exporter` / `llmobs-exporter`: read the configuration, start the collectors, serve HTTP."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Sequence

from exporter.config import ConfigError, load_config
from exporter.redact import RedactingFormatter
from exporter.registry import build_exporter, exporter_version
from exporter.server import ExporterServer, make_app
from exporter.web_config import load_web_config

log = logging.getLogger("exporter")


def configure_logging(level: str) -> None:
    """Every line through redact() (no credential in any log line); httpx's own INFO line per request
    is not news (two per engine scrape), so its loggers say only warnings."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = load_config(argv)
        web_config = load_web_config(config.web_config_file)
    except ConfigError as exc:
        print(f"llmobs-exporter: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_level)
    host, port = config.listen_host_port
    exporter = build_exporter(config)
    try:
        app = make_app(exporter, web_config)
        stats = exporter.collectors["http"]
        server = ExporterServer(app, host, port, web_config.ssl_context, stats=stats)
    except OSError as exc:
        exporter.close()
        print(
            f"llmobs-exporter: cannot listen on {config.listen_address}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    log.info(
        "llmobs-exporter %s serving %s://%s:%d/metrics (collectors: %s)",
        exporter_version(),
        server.scheme,
        host,
        server.port,
        ", ".join(exporter.collectors) or "none",
    )
    stop.wait()
    log.info("shutting down")
    server.close()
    exporter.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
