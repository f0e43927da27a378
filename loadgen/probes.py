"""Setup requests: the requests a run sends before its first phase (the calibration probes, or one check of
the --extra-body fields), counted apart from every phase (the report's `setup_requests`), since the
engine counts them.

They are also where a server's refusal of an optional body field is found out, once, instead of in every
request of the run: a 400 or 422 whose message names a field of --extra-body (seen: `transformers serve`
answers `ignore_eos` with 422 "Unexpected fields in the request: {'ignore_eos'}") drops that field for the
rest of the run, says so in the log and in the report's `dropped_body_fields` (field -> the server's
answer), and the request is sent again without it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from time import perf_counter_ns

from loadgen.client import LoadClient
from loadgen.result import SetupRequests
from loadgen.timing import RequestRecord

__all__ = ["SetupProber"]

log = logging.getLogger("loadgen")
REFUSAL_STATUSES = (400, 422)


class SetupProber:
    def __init__(
        self, client: LoadClient, path: str, run_id: str, extra_body: dict, encode: Callable[[dict], bytes]
    ) -> None:
        self.client = client
        self.path = path
        self.run_id = run_id
        self.extra_body = extra_body  # the run's own dict: a dropped field is gone for every later request
        self.encode = encode
        self.records: list[RequestRecord] = []
        self.purposes: list[str] = []
        self.dropped: dict[str, str] = {}

    async def send(self, name: str, purpose: str, body: dict) -> RequestRecord:
        """One non-streamed setup request (`body` without the --extra-body fields, which are added)."""
        if purpose not in self.purposes:
            self.purposes.append(purpose)
        while True:
            record = RequestRecord(f"{self.run_id}-setup-{name}", "setup", perf_counter_ns(), False)
            self.records.append(record)
            await self.client.execute(self.path, self.encode({**body, **self.extra_body}), record)
            field = self.refused_field(record)
            if field is None:
                return record
            self.dropped[field] = record.error
            del self.extra_body[field]
            log.warning(
                "the server refuses the body field %r (%s): the run sends it no more", field, record.error
            )

    def refused_field(self, record: RequestRecord) -> str | None:
        if record.http_status not in REFUSAL_STATUSES:
            return None
        for field in self.extra_body:
            if re.search(rf"(?<![\w-]){re.escape(field)}(?![\w-])", record.error):
                return field
        return None

    def summary(self) -> SetupRequests | None:
        if not self.records:
            return None
        succeeded = [r for r in self.records if r.ok]
        return SetupRequests(
            purpose="; ".join(self.purposes),
            sent=len(self.records),
            succeeded=len(succeeded),
            prompt_tokens=sum(r.prompt_tokens or 0 for r in succeeded),
            output_tokens=sum(r.output_tokens for r in succeeded),
        )
