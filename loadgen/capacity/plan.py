"""The memory plan of one GPU as vLLM makes it at start, from the model's shape and the engine's settings.

vLLM (V1) sizes its KV cache once, at start:

    budget   = GPU memory (cudaMemGetInfo's total) x gpu_memory_utilization
    kv       = budget - weights as loaded - activation peak of a profiling run - memory outside PyTorch
               (- CUDA graphs, which newer versions estimate and subtract)
    blocks   = kv // (block_size x KV bytes per token over all layers)
    capacity = blocks x block_size tokens; max_model_len / capacity = concurrent full-length sequences

`--kv-cache-memory` (and vLLM on CPU's VLLM_CPU_KVCACHE_SPACE) replace the budget arithmetic: kv is given.

Weights as loaded are the checkpoint's bytes plus what PyTorch's CUDA caching allocator adds: a tensor
over 10 MiB gets its own segment rounded up to 2 MiB, and when 1 MiB or less would be left over the
block keeps the whole segment (c10/cuda/CUDACachingAllocator.cpp: kRoundLarge, kSmallSize); vLLM's
"Model loading took" counts allocated blocks. vLLM also allocates the rotary cos/sin cache
(positions x rotary dim, in the model dtype). With the fused tensors vLLM allocates (q/k/v together,
gate/up together) this gives 7.5550 GiB for Qwen3-4B in bf16 (vLLM logged 7.5552), 14.99 GiB for
Llama-3.1-8B, 1.12 GiB for Qwen3-0.6B and 61.03 GiB for Qwen3-32B (vLLM on an H100 logged the same).

The activation peak is measured by vLLM with a dummy batch; it cannot be read from a config, so it is
estimated as the larger of the forward pass (max_num_batched_tokens x (3 x MLP width + q/k/v width +
2 x hidden) x dtype bytes: 0.75 GiB for Qwen3-4B at 10,000 tokens, vLLM logged 0.74) and the sampler's
warm-up over max_num_seqs rows of logits (38.5 bytes per row and vocabulary entry, fitted to vLLM V1 on
an H100 at 1,024 sequences: 5.56 GiB Qwen3-0.6B, 4.76 Llama-3.1-8B, 5.64 Qwen3-32B, 7.38 gpt-oss-20b).
Every estimate is labelled as one, and `--activation-reserve` replaces it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from loadgen.capacity.errors import CapacityError
from loadgen.capacity.model import DTYPE_BYTES, GIB, KV_DTYPE_BYTES, MIB, SLIDING, ModelSpec, size

SAMPLER_BYTES_PER_LOGIT = 38.5  # fitted: vLLM V1's sampler warm-up, bytes per (sequence x vocab entry)
NON_TORCH_BYTES = int(0.15 * GIB)  # vLLM on one H100 logged 0.13-0.14 GiB outside PyTorch
NON_TORCH_TP_BYTES = int(0.55 * GIB)  # with tensor parallelism (NCCL buffers): 0.55 GiB at TP 2
IN_FLIGHT_BATCHES = 2  # vLLM's async scheduling (on by default in 0.32): two batches scheduled at once
LARGE_GPU = 70 * GIB  # vLLM's larger scheduler defaults from here on (H100 class, not A100)
_SEGMENT_ROUND = 2 * MIB
_SMALL = MIB
_LARGE_BUFFER = 10 * MIB


@dataclass(frozen=True)
class EngineSettings:
    """vLLM's settings that decide the KV cache, with vLLM's defaults (None: vLLM's rule decides)."""

    max_model_len: int | None = None  # the model's context length
    gpu_memory_utilization: float = 0.9
    block_size: int = 16
    kv_cache_dtype: str = "auto"  # the model dtype
    tensor_parallel: int = 1
    max_num_seqs: int | None = None  # 1024 on GPUs of 70 GiB or more (not A100), else 256
    max_num_batched_tokens: int | None = None  # 8192 / 2048 by the same rule
    kv_cache_memory: int | None = None  # vLLM's --kv-cache-memory: bytes for the KV cache, no budget
    activation_reserve: int | None = None  # replaces the activation estimate
    non_torch_reserve: int | None = None
    cuda_graph_reserve: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.gpu_memory_utilization <= 1:
            raise CapacityError(f"gpu_memory_utilization {self.gpu_memory_utilization}: between 0 and 1")
        for name in ("block_size", "tensor_parallel"):
            if getattr(self, name) < 1:
                raise CapacityError(f"{name} {getattr(self, name)}: at least 1")
        for name in ("max_model_len", "max_num_seqs", "max_num_batched_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise CapacityError(f"{name} {value}: at least 1")


@dataclass(frozen=True)
class Gpu:
    memory: int  # bytes the engine can see (cudaMemGetInfo's total)
    source: str  # where the figure came from, in words
    name: str = ""


@dataclass(frozen=True)
class Plan:
    spec: ModelSpec
    settings: EngineSettings
    gpu: Gpu | None
    kv_dtype: str
    max_model_len: int
    weights_checkpoint: int
    weights_loaded: int
    loaded_detail: str
    kv_bytes_per_token: float
    budget: int | None
    activation: int
    activation_detail: str
    non_torch: int
    kv_memory: int
    kv_memory_detail: str
    blocks: int
    capacity_tokens: int
    sequences: float  # concurrent sequences of max_model_len tokens
    in_flight_tokens: int = 0  # scheduled but not yet settled: what a sliding window holds beyond itself
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def block_bytes(self) -> float:
        return self.settings.block_size * self.kv_bytes_per_token

    @property
    def reserve(self) -> int:
        """Everything the budget keeps beyond weights and KV cache."""
        return self.activation + self.non_torch + self.settings.cuda_graph_reserve

    def kv_bytes(self, tokens: int) -> float:
        return tokens * self.kv_bytes_per_token

    def sequence_bytes(self, tokens: int) -> float:
        """KV bytes vLLM holds for one sequence of `tokens` (sliding windows: less than kv_bytes)."""
        s = self.settings
        kv_bytes = KV_DTYPE_BYTES[self.kv_dtype]
        return self.spec.kv_bytes_per_sequence(
            tokens, kv_bytes, s.tensor_parallel, s.block_size, self.in_flight_tokens
        )

    def tokens_persize(self) -> float:
        return GIB / self.kv_bytes_per_token if self.kv_bytes_per_token else math.inf


def allocated_bytes(nbytes: int) -> int:
    """What PyTorch's CUDA caching allocator counts as allocated for one fresh tensor of nbytes."""
    rounded = max(512, math.ceil(nbytes / 512) * 512)
    if rounded <= _LARGE_BUFFER:
        return rounded  # small pool, or split from a 20 MiB segment
    segment = math.ceil(rounded / _SEGMENT_ROUND) * _SEGMENT_ROUND
    return rounded if segment - rounded > _SMALL else segment


def weights_as_loaded(spec: ModelSpec, tensor_parallel: int = 1) -> tuple[int, str]:
    """Weights on one GPU as vLLM's "Model loading took" counts them, and how that was derived."""
    checkpoint = spec.weight_bytes(tensor_parallel)
    if spec.gguf_tensors:
        return checkpoint, "the GGUF file's tensors"
    tensors = spec.tensors(tensor_parallel)
    computed = sum(t.nbytes for t in tensors)
    rope = spec.rotary_rows * spec.rotary_dim * int(DTYPE_BYTES[spec.dtype])
    if spec.checkpoint_bytes is not None and abs(computed - checkpoint) > 0.005 * checkpoint:
        return checkpoint + rope, (
            f"the checkpoint's size plus the rotary cache ({_mib(rope)}); the shape computed from "
            f"config.json gives {size(computed)}, so the allocator's rounding is not added"
        )
    allocated = sum(allocated_bytes(t.nbytes) for t in tensors)
    return allocated + rope, (
        f"+ {_mib(allocated - computed)} PyTorch allocator rounding of large tensors, "
        f"+ {_mib(rope)} rotary cache"
    )


def estimate_activation(spec: ModelSpec, max_num_seqs: int, batched_tokens: int) -> tuple[int, str]:
    """The profiling run's peak: the forward pass or the sampler's warm-up, whichever is larger."""
    dtype = DTYPE_BYTES[spec.dtype]
    inter = spec.intermediate
    if spec.experts and any(spec.moe_layers):
        inter = max(inter if not all(spec.moe_layers) else 0, spec.moe_intermediate * spec.experts_per_token)
    qkv = (spec.heads + 2 * spec.kv_heads) * spec.head_dim
    forward = int(batched_tokens * (3 * inter + qkv + 2 * spec.hidden) * dtype)
    sampler = int(max_num_seqs * spec.vocab * SAMPLER_BYTES_PER_LOGIT)
    if forward >= sampler:
        return forward, f"estimate: forward pass of {batched_tokens:,} tokens"
    return sampler, f"estimate: sampler warm-up of {max_num_seqs:,} sequences x {spec.vocab:,} vocabulary"


def scheduler_defaults(settings: EngineSettings, gpu: Gpu | None) -> tuple[int, int]:
    """vLLM's OpenAI-server defaults: 1024 sequences / 8192 tokens per step on GPUs of 70 GiB or
    more (except A100), else 256 / 2048."""
    large = gpu is not None and gpu.memory >= LARGE_GPU and "a100" not in gpu.name.lower()
    seqs = settings.max_num_seqs or (1024 if large else 256)
    tokens = settings.max_num_batched_tokens or (8192 if large else 2048)
    return seqs, tokens


def kv_dtype_bytes(spec: ModelSpec, kv_cache_dtype: str) -> tuple[str, float]:
    name = kv_cache_dtype.lower()
    if name == "auto":
        name = "float16" if spec.gguf_tensors else spec.dtype
    if name == "fp8" or name.startswith("fp8_"):
        name = name if name in KV_DTYPE_BYTES else "fp8"
    if name not in KV_DTYPE_BYTES:
        raise CapacityError(f"KV cache dtype {kv_cache_dtype}: one of auto, {', '.join(KV_DTYPE_BYTES)}")
    return name, KV_DTYPE_BYTES[name]


def make_plan(spec: ModelSpec, settings: EngineSettings, gpu: Gpu | None) -> Plan:
    if gpu is None and settings.kv_cache_memory is None:
        raise CapacityError(
            "no GPU memory: give --gpu-memory (e.g. 24GiB), run where NVML sees a GPU, "
            "or give --kv-cache-memory"
        )
    kv_dtype, kv_bytes = kv_dtype_bytes(spec, settings.kv_cache_dtype)
    tp = settings.tensor_parallel
    per_token = spec.kv_bytes_per_token(kv_bytes, tp)
    if per_token <= 0:
        raise CapacityError(f"{spec.architecture}: no layer keeps per-token KV (attention-free model)")
    max_len = settings.max_model_len or spec.max_position
    if not max_len:
        raise CapacityError("no context length in the model's config: give --max-model-len")
    checkpoint = spec.weight_bytes(tp)
    loaded, loaded_detail = weights_as_loaded(spec, tp)
    seqs, batched = scheduler_defaults(settings, gpu)
    if settings.activation_reserve is not None:
        activation, activation_detail = settings.activation_reserve, "given"
    else:
        activation, activation_detail = estimate_activation(spec, seqs, batched)
    non_torch = settings.non_torch_reserve
    if non_torch is None:
        non_torch = NON_TORCH_BYTES if tp == 1 else NON_TORCH_TP_BYTES
    budget = None
    if settings.kv_cache_memory is not None:
        kv_memory, kv_detail = settings.kv_cache_memory, "given (--kv-cache-memory)"
    else:
        assert gpu is not None
        budget = int(gpu.memory * settings.gpu_memory_utilization)
        kv_memory = budget - loaded - activation - non_torch - settings.cuda_graph_reserve
        kv_detail = "budget - weights - activation - non-torch" + (
            " - CUDA graphs" if settings.cuda_graph_reserve else ""
        )
    block_bytes = settings.block_size * per_token
    blocks = max(0, int(kv_memory // block_bytes))
    capacity = blocks * settings.block_size
    in_flight = IN_FLIGHT_BATCHES * batched
    per_sequence = spec.kv_bytes_per_sequence(max_len, kv_bytes, tp, settings.block_size, in_flight)
    # vLLM's "maximum concurrency": capacity / max_model_len; with sliding windows, per sequence's blocks
    sequences = blocks * block_bytes / per_sequence if spec.kv_layers(SLIDING) else capacity / max_len
    notes = list(spec.notes)
    if spec.kv_layers(SLIDING):
        notes.append(
            f"{spec.kv_layers(SLIDING)} of {spec.layers} layers use a sliding window of "
            f"{spec.sliding_window} tokens: vLLM holds and admits a sequence there by the window plus the "
            f"tokens that may be in flight ({IN_FLIGHT_BATCHES} x {batched:,} max_num_batched_tokens, "
            "async scheduling), at most the sequence, so the token capacity (all layers at full length) is "
            f"a lower bound; vLLM logs about {sequences * max_len:,.0f} tokens "
            "(its concurrency x max_model_len)"
        )
    if spec.layers - spec.kv_layers(SLIDING) - spec.kv_layers("full"):
        notes.append("linear-attention or state-space layers keep a fixed state per sequence, not estimated")
    if tp > 1:
        notes.append(
            f"tensor parallelism {tp}: figures are per GPU; weights divided evenly (norms and "
            "routers, replicated, are small)"
        )
    if spec.quantization is not None and spec.checkpoint_bytes is None:
        notes.append(
            f"{spec.quantization.method} weights computed from the config: approximate; the "
            "model directory's safetensors index gives the exact size"
        )
    if kv_memory <= 0:
        notes.append(
            "nothing is left for the KV cache: vLLM refuses to start (No available memory for "
            "the cache blocks); raise gpu_memory_utilization, use a larger GPU or more GPUs"
        )
    elif sequences < 1:  # vLLM's start-up check: one sequence of max_model_len must fit
        notes.append(
            f"the KV cache holds fewer tokens than max_model_len ({max_len:,}): vLLM refuses to "
            "start unless --max-model-len is lowered"
        )
    return Plan(
        spec=spec,
        settings=settings,
        gpu=gpu,
        kv_dtype=kv_dtype,
        max_model_len=max_len,
        weights_checkpoint=checkpoint,
        weights_loaded=loaded,
        loaded_detail=loaded_detail,
        kv_bytes_per_token=per_token,
        budget=budget,
        activation=activation,
        activation_detail=activation_detail,
        non_torch=non_torch,
        kv_memory=kv_memory,
        kv_memory_detail=kv_detail,
        blocks=blocks,
        capacity_tokens=capacity,
        sequences=sequences,
        in_flight_tokens=in_flight,
        notes=tuple(notes),
    )


def _mib(nbytes: float) -> str:
    return f"{nbytes / MIB:.1f} MiB"
