"""The exporter's errors meant for people: one tree, each caught once where it is counted or shown.

    ExporterError             a problem the exporter reports with a message (never a credential)
    ├── ConfigError           a setting that cannot be used (settings.py): shown, exit status 2
    │                         (__main__.py)
    ├── ScrapeError           one engine target's scrape failed, `kind` a schema.ErrorKind
    │                         (engines/base.py): counted in llm_target_errors_total (engines/scraper.py)
    ├── ParseError            a payload that is not exposition text (engines/payload.py): counted as
    │   │                     `parse` (engines/scraper.py)
    │   └── TooManySeries     past a target's max_series: counted as `too_many_series`
    └── WatchFailure          a failed Kubernetes list or watch, with its kind (discovery/kubernetes.py):
                              counted in exporter_kubernetes_* (discovery/service.py)

Every message shows through redact.redact and redact.bounded (ExporterError.__str__): no credential, and
at most redact.MAX_MESSAGE characters however much of an input it echoes (a 1 MB URL with a bad port).

A collector's own failures are counted by registry.py in exporter_collector_errors_total; what else
escapes a collector is a bug, logged as one. Internal signals that never leave their module are not
in this tree: http_protocol.BadRequest (answered 400/413/431 at once) and discovery.kubernetes.Gone
(410: list again).
"""

from __future__ import annotations

from exporter.redact import bounded, redact

__all__ = ["ExporterError"]


class ExporterError(Exception):
    """The root: a problem with a message meant for people."""

    def __str__(self) -> str:
        return bounded(redact(super().__str__()))
