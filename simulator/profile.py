"""Engine profiles: the numbers that make a simulated engine behave like one model on one GPU.

A profile is a YAML file (see simulator/profiles/). Every field is checked at load time; a bad
profile is a clear error naming the field, never a simulator that misbehaves later.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from simulator.errors import SimulatorError

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"


class ProfileError(SimulatorError, ValueError):
    """A profile file or value that cannot be used."""


@dataclass(frozen=True)
class CacheProfile:
    block_size: int = 16
    num_gpu_blocks: int = 4096
    gpu_memory_utilization: float = 0.92
    cache_dtype: str = "auto"
    enable_prefix_caching: bool = True


@dataclass(frozen=True)
class SchedulerProfile:
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    # 0 means no cap; vLLM answers 503 and counts vllm:admission_rejections_total beyond it.
    max_num_queued_reqs: int = 0
    # vLLM's --stream-interval: an SSE event goes out once this many tokens are waiting (the first
    # token and the last always go out at once), so one event can carry several tokens.
    stream_interval: int = 1


@dataclass(frozen=True)
class TimingProfile:
    """One engine step costs
    step_base + decode_per_seq * decode_seqs + prefill_per_token * prefill_tokens
    + context_per_token * context_tokens_read, all multiplied by time_scale."""

    step_base_seconds: float = 0.015
    decode_per_seq_seconds: float = 0.0001
    prefill_per_token_seconds: float = 0.00005
    context_per_token_seconds: float = 0.0
    time_scale: float = 1.0


@dataclass(frozen=True)
class OutputProfile:
    """How long answers are when the client does not set ignore_eos: a deterministic
    pseudo-random length, uniform in [min_tokens, max_tokens], per request."""

    min_tokens: int = 16
    max_tokens: int = 512


@dataclass(frozen=True)
class SpeculativeProfile:
    """vLLM's --speculative-config (EAGLE, MTP, n-gram ...): each decode step verifies
    num_speculative_tokens draft tokens and emits 1 + the accepted ones, all in one SSE event.
    Draft position i is accepted with probability acceptance_rate when every earlier one was
    (deterministic per request and position). 0 tokens: speculative decoding off."""

    num_speculative_tokens: int = 0
    acceptance_rate: float = 1.0


@dataclass(frozen=True)
class ReasoningProfile:
    """A reasoning model served with a reasoning parser: each answer starts with a number of
    reasoning tokens drawn uniformly from [min_tokens, max_tokens] per request, streamed in the
    delta field `field` (`reasoning` since vLLM 0.12; `reasoning_content` before, and in SGLang
    and DeepSeek's API). max_tokens 0: not a reasoning model."""

    min_tokens: int = 0
    max_tokens: int = 0
    field: str = "reasoning"


REASONING_FIELDS = ("reasoning", "reasoning_content")


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    model: str
    max_model_len: int
    cache: CacheProfile
    scheduler: SchedulerProfile
    timing: TimingProfile
    output: OutputProfile
    speculative: SpeculativeProfile = SpeculativeProfile()
    reasoning: ReasoningProfile = ReasoningProfile()

    @property
    def kv_capacity_tokens(self) -> int:
        return self.cache.num_gpu_blocks * self.cache.block_size

    def with_time_scale(self, time_scale: float) -> Profile:
        _positive("timing.time_scale", time_scale)
        return dataclasses.replace(self, timing=dataclasses.replace(self.timing, time_scale=time_scale))

    def with_changes(self, source: str = "flags", **sections: dict[str, Any]) -> Profile:
        """This profile with some fields of some sections replaced (`scheduler={"stream_interval": 4}`),
        checked like a profile file."""
        changed = {
            name: dataclasses.replace(getattr(self, name), **fields) for name, fields in sections.items()
        }
        profile = dataclasses.replace(self, **changed)
        _check(source, profile)
        return profile


def available_profiles() -> list[str]:
    return sorted(path.stem for path in PROFILES_DIR.glob("*.yaml"))


def load_profile(name_or_path: str) -> Profile:
    """Load a shipped profile by name, or any profile file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ProfileError(
            f"profile {name_or_path!r} not found: give a file path or one of "
            + ", ".join(available_profiles())
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML: {exc}") from exc
    return parse_profile(data, source=str(path))


def parse_profile(data: Any, source: str = "profile") -> Profile:
    if not isinstance(data, dict):
        raise ProfileError(f"{source}: expected a mapping at the top level")
    known = {"name", "description", "model", "max_model_len", "cache", "scheduler", "timing", "output"}
    known |= {"speculative", "reasoning"}
    _no_unknown(source, data, known)
    profile = Profile(
        name=_str(source, data, "name"),
        description=str(data.get("description", "")),
        model=_str(source, data, "model"),
        max_model_len=_int(source, data, "max_model_len"),
        cache=_section(source, data, "cache", CacheProfile),
        scheduler=_section(source, data, "scheduler", SchedulerProfile),
        timing=_section(source, data, "timing", TimingProfile),
        output=_section(source, data, "output", OutputProfile),
        speculative=_section(source, data, "speculative", SpeculativeProfile),
        reasoning=_section(source, data, "reasoning", ReasoningProfile),
    )
    _check(source, profile)
    return profile


def _check(source: str, profile: Profile) -> None:
    for field, value in [
        ("max_model_len", profile.max_model_len),
        ("cache.block_size", profile.cache.block_size),
        ("cache.num_gpu_blocks", profile.cache.num_gpu_blocks),
        ("scheduler.max_num_seqs", profile.scheduler.max_num_seqs),
        ("scheduler.max_num_batched_tokens", profile.scheduler.max_num_batched_tokens),
        ("timing.time_scale", profile.timing.time_scale),
        ("output.min_tokens", profile.output.min_tokens),
        ("scheduler.stream_interval", profile.scheduler.stream_interval),
    ]:
        _positive(f"{source}: {field}", value)
    for field in dataclasses.fields(TimingProfile):
        if getattr(profile.timing, field.name) < 0:
            raise ProfileError(f"{source}: timing.{field.name} must be >= 0")
    if profile.scheduler.max_num_queued_reqs < 0:
        raise ProfileError(f"{source}: scheduler.max_num_queued_reqs must be >= 0 (0 = no cap)")
    if not 0 < profile.cache.gpu_memory_utilization <= 1:
        raise ProfileError(f"{source}: cache.gpu_memory_utilization must be in (0, 1]")
    if profile.output.max_tokens < profile.output.min_tokens:
        raise ProfileError(f"{source}: output.max_tokens must be >= output.min_tokens")
    speculative, reasoning = profile.speculative, profile.reasoning
    if not 0 <= speculative.num_speculative_tokens <= 32:
        raise ProfileError(f"{source}: speculative.num_speculative_tokens must be in [0, 32]")
    if not 0 <= speculative.acceptance_rate <= 1:
        raise ProfileError(f"{source}: speculative.acceptance_rate must be in [0, 1]")
    if not 0 <= reasoning.min_tokens <= reasoning.max_tokens:
        raise ProfileError(f"{source}: reasoning needs 0 <= min_tokens <= max_tokens")
    if reasoning.field not in REASONING_FIELDS:
        raise ProfileError(f"{source}: reasoning.field must be one of {', '.join(REASONING_FIELDS)}")
    if profile.max_model_len > profile.kv_capacity_tokens:
        # vLLM refuses to start when one max-length request cannot fit in the KV cache.
        raise ProfileError(
            f"{source}: max_model_len {profile.max_model_len} exceeds the KV cache "
            f"({profile.cache.num_gpu_blocks} blocks x {profile.cache.block_size} tokens)"
        )


def _section(source: str, data: dict, key: str, cls: type) -> Any:
    raw = data.get(key, {})
    if not isinstance(raw, dict):
        raise ProfileError(f"{source}: {key} must be a mapping")
    fields = {field.name: field for field in dataclasses.fields(cls)}
    _no_unknown(f"{source}: {key}", raw, set(fields))
    values = {}
    for name, value in raw.items():
        expected = type(getattr(cls(), name))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not expected:
            raise ProfileError(f"{source}: {key}.{name} must be {expected.__name__}, got {value!r}")
        values[name] = value
    return cls(**values)


def _no_unknown(source: str, data: dict, known: set[str]) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise ProfileError(f"{source}: unknown keys {unknown}; known: {sorted(known)}")


def _str(source: str, data: dict, key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ProfileError(f"{source}: {key} must be a non-empty string")
    return value


def _int(source: str, data: dict, key: str) -> int:
    value = data.get(key)
    if type(value) is not int:
        raise ProfileError(f"{source}: {key} must be an integer, got {value!r}")
    return value


def _positive(field: str, value: float) -> None:
    if value <= 0:
        raise ProfileError(f"{field} must be > 0")
