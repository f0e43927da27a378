"""How a request ended: one outcome per request, the `outcome` label of loadgen_requests_total, the
report's `by_outcome`, the JSONL record's `outcome` and the phase stats' counts all use these names.
docs/metrics.md and loadgen/README.md ("Failures") list them (tests/loadgen/test_outcomes.py checks, and
that every outcome the code sets is one of them).

- success: the whole answer arrived (a 2xx, streamed to [DONE] or a finish reason)
- connect: no response at all: refused, reset before any byte, TLS refused, TCP connect timeout
- timeout: read silence past --read-timeout, or no complete response within --request-timeout
- http_429, http_4xx, http_5xx: the server answered with that status class
- stream_broken: the connection was lost mid-answer, an `error` event, or no [DONE] nor finish reason
- malformed: an event that is not JSON, an unexpected shape, a 1xx/3xx status, an unusable body
- too_large: past a byte budget (an event, a streamed answer, a body)
- cancelled: still in flight (or waiting for a connection) when a stop's grace period ended
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["FAILURES", "OUTCOMES", "Outcome"]

Outcome = Literal[
    "success",
    "connect",
    "timeout",
    "http_429",
    "http_4xx",
    "http_5xx",
    "stream_broken",
    "malformed",
    "too_large",
    "cancelled",
]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
FAILURES: tuple[Outcome, ...] = tuple(outcome for outcome in OUTCOMES if outcome != "success")
