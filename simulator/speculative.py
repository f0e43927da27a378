"""Speculative decoding (EAGLE, MTP, n-gram drafts alike): how many of a step's draft tokens the target
model accepts. Draft position i is accepted with the profile's rate when every earlier one was, as in
rejection sampling, which stops at the first rejected draft; the draw is a deterministic function of
the request, the step and the position, so a seed replays the same acceptances.
"""

from __future__ import annotations

__all__ = ["accepted_drafts"]


def accepted_drafts(seed: int, step: int, drafts: int, rate: float) -> int:
    """The leading run of accepted positions among `drafts` draft tokens of one step."""
    accepted = 0
    while accepted < drafts and (rate >= 1 or _uniform(seed, step, accepted) < rate):
        accepted += 1
    return accepted


def _uniform(seed: int, step: int, position: int) -> float:
    """A deterministic pseudo-random number in [0, 1) for one draft position of one step."""
    mixed = (seed * 0x9E3779B1 + step * 0x85EBCA77 + position * 0xC2B2AE3D) & 0xFFFFFFFF
    mixed ^= mixed >> 15
    mixed = (mixed * 0x2C1B3C6D) & 0xFFFFFFFF
    mixed ^= mixed >> 12
    return mixed / 2**32
