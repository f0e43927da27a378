"""The grafana wing's errors meant for people (`llmobs snapshot`, and the load generator's HTML pages that
use grafana.snapshot): one tree, each caught once where it is shown.

    GrafanaError              a problem with a message for people
    ├── PrometheusError       Prometheus could not be used (snapshot/prometheus.py): every message
    │   │                     scrubbed of the client's credentials there (Prometheus._call)
    │   ├── Unreachable       no answer at all: refused, DNS, TLS, a timeout on the first call
    │   ├── QueryFailed       Prometheus answered with an error, or not with its API's JSON
    │   └── BudgetExceeded    an answer past max_bytes, or the whole job past deadline_s
    ├── ResolveError          a time, duration, step, --var or budget that cannot be used
    │                         (snapshot/resolve.py, cli.py)
    ├── PlotlyMissing         the plotly package (its plotly.js) cannot be had (snapshot/page.py)
    └── UnknownDashboard      a dashboard name, uid or title the catalog lacks (catalog/__init__.py)

`llmobs snapshot` (cli.py) shows each on stderr with exit status 2; loadgen/html shows them in its own
words. Every message shows bounded (GrafanaError.__str__): at most MAX_MESSAGE characters however much
of an input it echoes (a megabyte --var, a Prometheus URL with a megabyte port), its middle cut with a
note of how much. `message` is the whole text, for the one place that scrubs it before it is bounded
(a credential cut in two would no longer be found).
"""

from __future__ import annotations

__all__ = ["MAX_MESSAGE", "GrafanaError", "UnknownDashboard", "bounded"]

MAX_MESSAGE = 1000  # characters of a message meant for people; its middle is cut past this


def bounded(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text`, or past `limit` characters its start and end with a note of how much was cut between."""
    if len(text) <= limit:
        return text
    head, tail = text[: limit * 2 // 3], text[len(text) - limit // 3 :]
    return f"{head}...[{len(text) - len(head) - len(tail)} characters cut]...{tail}"


class GrafanaError(Exception):
    """The root: a problem with a message meant for people (no traceback needed)."""

    @property
    def message(self) -> str:
        """The whole message, unbounded (str() bounds it)."""
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()

    def __str__(self) -> str:
        return bounded(self.message)


class UnknownDashboard(GrafanaError, KeyError):
    """No dashboard of that name, uid or title; the message lists the choices."""
