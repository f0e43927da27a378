"""What a run's phases wait on, when a run is one part of several (workers.py, worker.py): the setup
findings its pool's parent hands over (Prepared), and who says when phases start and whether the
next one runs (Coordinator). A run alone has neither: it does its own setup, waits for --start-at
itself and judges its own sweep (runner.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from loadgen.stats import PhaseStats

__all__ = ["Coordinator", "Prepared"]


@dataclass(frozen=True)
class Prepared:
    """What a run's setup learned from the server (Run.prepare), handed to the workers of a pool
    (workers.py) so that they send no setup requests of their own."""

    model: str | None
    model_note: str | None
    tokens_per_word: float | None  # synthetic prompts without a tokenizer: calibrated, else None
    template_tokens: float | None
    length_source: str | None
    extra_body: Mapping[str, object]  # the --extra-body fields the server takes


class Coordinator(Protocol):
    """Who says when a run's first phase starts and whether the next phase runs: the run itself
    (None: --start-at, then the sweep's verdict), or the parent of a worker pool (worker.py)."""

    async def ready(self) -> None:
        """Setup is done: return when the first phase should start."""
        ...

    async def warmed(self) -> None:
        """The warm-up is done and drained: return when the measured phases should start (every part's
        warm-up done, so no warm-up request is in flight while another part measures)."""
        ...

    async def carry_on(self, stats: PhaseStats) -> bool:
        """A phase is done (its stats final): whether the next one runs."""
        ...
