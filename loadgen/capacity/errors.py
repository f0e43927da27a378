"""The capacity planner's one error for people: a model, setting or engine answer it cannot use."""

from __future__ import annotations

from loadgen.errors import LoadgenError


class CapacityError(LoadgenError, ValueError):
    """A message for people: what was given, why it cannot be used, what would work."""
