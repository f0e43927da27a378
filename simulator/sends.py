"""Ground truth for tests of clients: when each SSE event of a request left the simulator.

Off unless `--record-sends N`. Then the last N streamed requests are kept, keyed by the client's
`x-request-id` header (vLLM's request-id header; the response id when there is none): for each
event, the `time.perf_counter_ns()` reading taken right after the bytes were handed to the server's
transport (CLOCK_MONOTONIC on Linux: the same clock as in every other process on the host), the
number of output tokens it carried and how many of them were reasoning, plus when the stream ended.
`GET /_simulator/sends` serves them. A load generator's measurement minus this is its error
(DESIGN.md, "Measuring a load generator honestly"). Memory is bounded: N requests, each at most its
output length in events.
"""

from __future__ import annotations

from collections import OrderedDict

from simulator.errors import FlagError

MAX_RECORDED = 100_000


class SendLog:
    def __init__(self, keep: int) -> None:
        if not 1 <= keep <= MAX_RECORDED:
            raise FlagError(f"--record-sends must be between 1 and {MAX_RECORDED}")
        self.keep = keep
        self._requests: OrderedDict[str, dict] = OrderedDict()

    def events(self, key: str, now_ns: int, tokens: list[tuple[int, int]]) -> None:
        """One write of `len(tokens)` events, each (tokens, reasoning tokens); a client that fell
        behind gets several events in one write."""
        record = self._requests.get(key)
        if record is None:
            record = self._requests[key] = {"events": [], "done_ns": None}
            while len(self._requests) > self.keep:
                self._requests.popitem(last=False)
        record["events"].extend([now_ns, count, reasoning] for count, reasoning in tokens)

    def done(self, key: str, now_ns: int) -> None:
        record = self._requests.get(key)
        if record is not None:
            record["done_ns"] = now_ns

    def as_dict(self) -> dict[str, dict]:
        return dict(self._requests)
