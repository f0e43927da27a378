"""The load generator's errors meant for people: one tree, caught at its root.

    LoadgenError              anything that stops a run before or during setup, with a message for people
    ├── ScenarioError         a setting (flag, YAML key, control-API body) that cannot be used
    ├── WorkloadError         a dataset, length distribution or tokenizer that cannot be used
    ├── ClientError           the server could not be used at setup (model discovery, the API key)
    ├── EventLoopError        the event loop asked for cannot be had
    ├── WorkerError           a worker process could not run its slice (workers.py)
    ├── MergeError            shard reports that cannot be merged into one run's (merge.py)
    ├── CapacityError         a capacity plan's input that cannot be used (capacity/errors.py)
    ├── ReportDataError       a report or JSONL file the HTML pages cannot read (html/data.py)
    └── GateError             a `compare --fail-if` expression that cannot be read (html/compare.py)

Each boundary catches LoadgenError once: the command line (message on stderr, exit status 2), the
control API (400 for a bad scenario; a failed run's state and error otherwise) and the runner (the
run's state becomes `failed`). Anything else escaping is a bug, and is reported as one.

Every message shows scrubbed of registered secrets and bounded (LoadgenError.__str__, redact.bounded):
at most redact.MAX_MESSAGE characters however much of an input it echoes (a 1 MB port in a URL).

Failures of single requests are never raised: they are outcomes counted on the request's record
(outcomes.py). The three leaves that are about values also derive from ValueError (and
ClientError from RuntimeError), as they did before this root existed, so older `except` clauses
still catch them.
"""

from __future__ import annotations

from loadgen.redact import bounded, scrub

__all__ = ["ClientError", "EventLoopError", "LoadgenError", "ScenarioError", "WorkloadError"]


class LoadgenError(Exception):
    """The root: a problem with a message meant for people (no traceback needed)."""

    def __str__(self) -> str:
        return bounded(scrub(super().__str__()))


class ScenarioError(LoadgenError, ValueError):
    """A configuration problem: names the setting, what was given and what is accepted."""


class WorkloadError(LoadgenError, ValueError):
    """A dataset, length specification or tokenizer that cannot be used."""


class ClientError(LoadgenError, RuntimeError):
    """A setup-time failure against the server (model discovery) or an unusable API key."""


class EventLoopError(LoadgenError, ValueError):
    """The event loop asked for cannot be had (unknown name, uvloop not installed)."""
