"""A model's shape, read from its `config.json` (Hugging Face, hf_model.py) or a GGUF file (gguf_model.py),
and what follows from it: the weight tensors as vLLM allocates them and the KV-cache bytes per token.

Sources, in order of preference for the weights: the checkpoint itself (the safetensors index's
`total_size`, or the GGUF file's tensors), else the parameter count computed from config.json for a
decoder of the llama family (dense, MoE, MLA; Qwen, Llama, Mistral, Gemma, DeepSeek shapes). What a
config cannot tell (a vision tower, a quantization scheme other than fp8 or 4/8-bit groups) is said in
`notes`, never guessed silently.

KV bytes per token and layer (vLLM's attention specs):
- standard attention: 2 (K and V) x KV heads on this GPU x head_dim x bytes of the KV dtype;
  with tensor parallelism each GPU holds max(1, KV heads / TP) heads (vLLM replicates when TP > KV heads);
- MLA (DeepSeek V2/V3, Kimi): one latent of kv_lora_rank + qk_rope_head_dim values, the same on every GPU;
- sliding-window layers: as standard, but a sequence keeps at most the window (plus one block);
- linear-attention and state-space layers: a fixed state per sequence, no per-token KV (not estimated).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

KIB, MIB, GIB = 1024, 1024**2, 1024**3
DTYPE_BYTES = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0, "fp8": 1.0, "float8": 1.0}
# KV cache dtypes: vLLM's --kv-cache-dtype names and llama.cpp's --cache-type-k/-v names (ggml block
# types: bytes per block / values per block).
KV_DTYPE_BYTES = {
    "bfloat16": 2.0,
    "float16": 2.0,
    "float32": 4.0,
    "fp8": 1.0,
    "fp8_e4m3": 1.0,
    "fp8_e5m2": 1.0,
    "fp8_inc": 1.0,
    "f16": 2.0,
    "bf16": 2.0,
    "f32": 4.0,
    "q8_0": 34 / 32,
    "q4_0": 18 / 32,
    "q4_1": 20 / 32,
    "q5_0": 22 / 32,
    "q5_1": 24 / 32,
    "iq4_nl": 18 / 32,
}
FULL, SLIDING, OTHER = "full", "sliding", "other"  # layer kinds for the KV cache


def size(nbytes: float) -> str:
    """Bytes for people: GiB from 1 GiB up (negative too), else MiB, else KiB."""
    magnitude = abs(nbytes)
    if magnitude >= GIB or magnitude == 0:
        return f"{nbytes / GIB:.2f} GiB"
    if magnitude >= MIB:
        return f"{nbytes / MIB:.2f} MiB"
    return f"{nbytes / KIB:.2f} KiB"


@dataclass(frozen=True)
class Quantization:
    """Weights of the linear layers in fewer bytes: fp8 (one byte, a float32 scale per block or per
    tensor) or `bits` with a scale and a zero point per `group_size` inputs (AWQ, GPTQ)."""

    method: str
    bits: int = 8
    group_size: int | None = None  # 4/8-bit groups
    block: tuple[int, int] | None = None  # fp8 block-wise scales


@dataclass(frozen=True)
class Tensor:
    name: str
    numel: int
    element_bytes: float

    @property
    def nbytes(self) -> int:
        return math.ceil(self.numel * self.element_bytes)


@dataclass(frozen=True)
class ModelSpec:
    """The shape that decides memory: attention, MLP, vocabulary, dtype, and where it came from."""

    source: str  # what was read: "config.json", "config.json + safetensors index", "GGUF"
    architecture: str
    model_type: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied_embeddings: bool
    dtype: str  # the checkpoint's dtype, e.g. bfloat16
    max_position: int
    layer_kinds: tuple[str, ...]  # FULL, SLIDING or OTHER per layer
    sliding_window: int | None = None
    mla: tuple[int, int] | None = None  # (kv_lora_rank, qk_rope_head_dim)
    mla_dims: dict = field(default_factory=dict)  # q_lora_rank, qk_nope_head_dim, v_head_dim
    experts: int = 0
    experts_per_token: int = 0
    moe_intermediate: int = 0
    shared_intermediate: int = 0
    moe_layers: tuple[bool, ...] = ()
    qk_norm: bool = False
    qkv_bias: bool = False
    norms_per_layer: int = 2
    rotary_rows: int = 0  # positions in vLLM's cos/sin cache
    rotary_dim: int = 0
    quantization: Quantization | None = None
    checkpoint_bytes: int | None = None  # measured from the checkpoint (safetensors index, GGUF tensors)
    gguf_tensors: tuple[Tensor, ...] = ()
    notes: tuple[str, ...] = ()

    # -- KV cache ---------------------------------------------------------------------------------

    def kv_heads_per_gpu(self, tensor_parallel: int = 1) -> int:
        return max(1, self.kv_heads // tensor_parallel)

    def kv_bytes_per_token_layer(self, kv_dtype_bytes: float, tensor_parallel: int = 1) -> float:
        """Bytes one token takes in one attention layer's KV cache on one GPU."""
        if self.mla is not None:
            return sum(self.mla) * kv_dtype_bytes
        return 2 * self.kv_heads_per_gpu(tensor_parallel) * self.head_dim * kv_dtype_bytes

    def kv_layers(self, kind: str) -> int:
        return sum(1 for k in self.layer_kinds if k == kind)

    def kv_bytes_per_token(self, kv_dtype_bytes: float, tensor_parallel: int = 1) -> float:
        """Every layer that keeps per-token KV (full and sliding-window attention)."""
        per_layer = self.kv_bytes_per_token_layer(kv_dtype_bytes, tensor_parallel)
        return per_layer * (self.kv_layers(FULL) + self.kv_layers(SLIDING))

    def kv_bytes_per_sequence(
        self,
        tokens: int,
        kv_dtype_bytes: float,
        tensor_parallel: int = 1,
        block_size: int = 16,
        in_flight_tokens: int = 0,
    ) -> float:
        """What vLLM holds (and admits by) for one sequence of `tokens`, in whole blocks: full layers the
        whole sequence; sliding-window layers the window less one token plus the tokens that may be in
        flight (scheduled, not yet freed), at most the sequence, plus one block (the window need not
        start at a block's start): vLLM 0.32 SlidingWindowSpec.max_admission_blocks_per_request."""
        per_layer = self.kv_bytes_per_token_layer(kv_dtype_bytes, tensor_parallel)
        full = math.ceil(tokens / block_size) * block_size
        if self.sliding_window is None:
            return per_layer * (self.kv_layers(FULL) + self.kv_layers(SLIDING)) * full
        held = min(self.sliding_window - 1 + in_flight_tokens, tokens)
        window = (math.ceil(held / block_size) + 1) * block_size
        return per_layer * (self.kv_layers(FULL) * full + self.kv_layers(SLIDING) * window)

    # -- weights ----------------------------------------------------------------------------------

    def parameters(self) -> int:
        """Parameter count of the checkpoint (vocabulary unpadded), computed from the shape."""
        return sum(t.numel for t in self.tensors(vllm_layout=False, quantized=False))

    def weight_bytes(self, tensor_parallel: int = 1) -> int:
        """Bytes of the weights on one GPU: the checkpoint's own size when it was read, else computed."""
        if self.checkpoint_bytes is not None:
            return math.ceil(self.checkpoint_bytes / tensor_parallel)
        return sum(t.nbytes for t in self.tensors(tensor_parallel, vllm_layout=False))

    def tensors(
        self, tensor_parallel: int = 1, vllm_layout: bool = True, quantized: bool = True
    ) -> list[Tensor]:
        """The weight tensors, one GPU's share. vllm_layout: q/k/v and gate/up fused into one tensor
        each (as vLLM allocates them), the vocabulary padded to a multiple of 64."""
        if self.gguf_tensors:
            return [replace(t, numel=math.ceil(t.numel / tensor_parallel)) for t in self.gguf_tensors]
        return list(_tensors(self, tensor_parallel, vllm_layout, quantized))


def _tensors(spec: ModelSpec, tp: int, fused: bool, quantized: bool) -> Iterator[Tensor]:
    """Weight tensors of a llama-family decoder; sharded ones divided by the tensor-parallel size."""
    dtype = DTYPE_BYTES[spec.dtype]
    quant = spec.quantization if quantized else None
    vocab = math.ceil(spec.vocab / 64) * 64 if fused else spec.vocab
    h = spec.hidden

    def linear(name: str, out_features: int, in_features: int, shard: bool = True) -> Iterator[Tensor]:
        numel = out_features * in_features // (tp if shard else 1)
        if quant is None:
            yield Tensor(name, numel, dtype)
        elif quant.method == "fp8":
            yield Tensor(name, numel, 1.0)
            if quant.block:
                blocks = math.ceil(out_features / quant.block[0]) * math.ceil(in_features / quant.block[1])
                yield Tensor(f"{name}.weight_scale_inv", blocks // (tp if shard else 1) or 1, 4.0)
            else:
                yield Tensor(f"{name}.weight_scale", 1, 4.0)
        else:  # integer groups: packed weights, a 16-bit scale and a packed zero point per group
            groups = math.ceil(in_features / (quant.group_size or in_features)) * out_features
            yield Tensor(name, numel, quant.bits / 8)
            yield Tensor(f"{name}.scales", groups // tp, 2.0)
            yield Tensor(f"{name}.qzeros", groups // tp, quant.bits / 8)

    def norm(name: str, size: int) -> Tensor:
        return Tensor(name, size, dtype)

    yield Tensor("embed_tokens", vocab * h // tp, dtype)
    for i in range(spec.layers):
        p = f"layers.{i}"
        yield from _attention(spec, p, h, tp, fused, linear, norm)
        if spec.moe_layers and spec.moe_layers[i]:
            yield from _moe(spec, p, h, tp, fused, linear)
        else:
            yield from _mlp(p, h, spec.intermediate, fused, linear)
        for n in range(spec.norms_per_layer):
            yield norm(f"{p}.norm{n}", h)
    yield norm("norm", h)
    if not spec.tied_embeddings:
        yield Tensor("lm_head", vocab * h // tp, dtype)


def _attention(spec: ModelSpec, p: str, h: int, tp: int, fused: bool, linear, norm) -> Iterator[Tensor]:
    dtype = DTYPE_BYTES[spec.dtype]
    if spec.mla is not None:
        kv_lora, rope = spec.mla
        nope, v_dim = spec.mla_dims["qk_nope_head_dim"], spec.mla_dims["v_head_dim"]
        q_lora = spec.mla_dims.get("q_lora_rank")
        q_out = spec.heads * (nope + rope)
        if q_lora:
            yield from linear(f"{p}.q_a_proj", q_lora, h, shard=False)
            yield norm(f"{p}.q_a_layernorm", q_lora)
            yield from linear(f"{p}.q_b_proj", q_out, q_lora)
        else:
            yield from linear(f"{p}.q_proj", q_out, h)
        yield from linear(f"{p}.kv_a_proj_with_mqa", kv_lora + rope, h, shard=False)
        yield norm(f"{p}.kv_a_layernorm", kv_lora)
        yield from linear(f"{p}.kv_b_proj", spec.heads * (nope + v_dim), kv_lora)
        yield from linear(f"{p}.o_proj", h, spec.heads * v_dim)
        return
    q, kv = spec.heads * spec.head_dim, spec.kv_heads * spec.head_dim
    kv_local = spec.kv_heads_per_gpu(tp) * spec.head_dim * tp  # replicated KV heads when TP > KV heads
    if fused:
        yield from linear(f"{p}.qkv_proj", q + 2 * kv_local, h)
    else:
        for name, out in (("q_proj", q), ("k_proj", kv), ("v_proj", kv)):
            yield from linear(f"{p}.{name}", out, h)
    if spec.qkv_bias:
        yield Tensor(f"{p}.qkv_bias", (q + 2 * (kv_local if fused else kv)) // tp, dtype)
    yield from linear(f"{p}.o_proj", h, q)
    if spec.qk_norm:
        yield norm(f"{p}.q_norm", spec.head_dim)
        yield norm(f"{p}.k_norm", spec.head_dim)


def _mlp(p: str, h: int, inter: int, fused: bool, linear) -> Iterator[Tensor]:
    if fused:
        yield from linear(f"{p}.gate_up_proj", 2 * inter, h)
    else:
        yield from linear(f"{p}.gate_proj", inter, h)
        yield from linear(f"{p}.up_proj", inter, h)
    yield from linear(f"{p}.down_proj", h, inter)


def _moe(spec: ModelSpec, p: str, h: int, tp: int, fused: bool, linear) -> Iterator[Tensor]:
    dtype = DTYPE_BYTES[spec.dtype]
    yield Tensor(f"{p}.gate", spec.experts * h, dtype)  # the router, replicated
    if spec.model_type.startswith("deepseek") or spec.model_type.startswith("kimi"):
        yield Tensor(f"{p}.e_score_correction_bias", spec.experts, 4.0)
    inter = spec.moe_intermediate
    if fused:  # vLLM's FusedMoE: w13 [E, 2I, H] and w2 [E, H, I]
        yield from linear(f"{p}.experts.w13", spec.experts * 2 * inter, h)
        yield from linear(f"{p}.experts.w2", spec.experts * h, inter)
    else:
        for e in range(spec.experts):
            yield from _mlp(f"{p}.experts.{e}", h, inter, False, linear)
    if spec.shared_intermediate:
        yield from _mlp(f"{p}.shared_expert", h, spec.shared_intermediate, fused, linear)
        if spec.model_type == "qwen2_moe":
            yield Tensor(f"{p}.shared_expert_gate", h, dtype)
