"""A model's shape, read from its `config.json` (Hugging Face) or a GGUF file, and what follows from it:
the weight tensors as vLLM allocates them and the KV-cache bytes per token.

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

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from loadgen.capacity.errors import CapacityError

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


_FULL_NAMES = ("full_attention", "attention", "global_attention")
_SLIDING_NAMES = ("sliding_attention", "local_attention", "chunked_attention")


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


# -- reading config.json -------------------------------------------------------------------------


def load_config(path: Path, dtype: str = "auto") -> ModelSpec:
    """A model directory (config.json, and model.safetensors.index.json or model.safetensors when
    present) or a config.json file."""
    config_path = path / "config.json" if path.is_dir() else path
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CapacityError(
            f"{config_path}: no such file (give a model directory, config.json or .gguf)"
        ) from None
    except (OSError, ValueError) as exc:
        raise CapacityError(f"{config_path}: not a readable JSON config ({exc})") from None
    if not isinstance(config, dict):
        raise CapacityError(f"{config_path}: not a JSON object")
    checkpoint = _checkpoint_bytes(config_path.parent)
    spec = from_config(config, dtype, checkpoint)
    if checkpoint is not None:
        spec = replace(spec, source=f"{spec.source} + safetensors")
    return spec


def from_config(config: dict, dtype: str = "auto", checkpoint_bytes: int | None = None) -> ModelSpec:
    """The shape from a Hugging Face config (the `text_config` of a multimodal model); the weights'
    size from the checkpoint when given (needed for quantization schemes the config cannot size)."""
    outer = config
    notes: list[str] = []
    if isinstance(config.get("text_config"), dict):
        config = {**{k: v for k, v in outer.items() if k != "text_config"}, **config["text_config"]}
        notes.append(
            "multimodal model: the text decoder's shape; the vision tower's weights are counted "
            "only from the checkpoint (safetensors index)"
        )
    try:
        spec = _from_config(config, outer, dtype, notes)
    except CapacityError:
        raise
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise CapacityError(f"config.json lacks or has a bad value for {exc}") from None
    quantization = outer.get("quantization_config") or config.get("quantization_config")
    try:
        spec = replace(spec, quantization=_quantization(quantization))
    except CapacityError:
        if checkpoint_bytes is None:
            raise
        spec = replace(
            spec,
            notes=(*spec.notes, f"{quantization.get('quant_method')} weights: the checkpoint's size is used"),
        )
    return replace(spec, checkpoint_bytes=checkpoint_bytes)


def _from_config(config: dict, outer: dict, dtype: str, notes: list[str]) -> ModelSpec:
    hidden = _int(config, "hidden_size", "n_embd", "d_model")
    layers = _int(config, "num_hidden_layers", "n_layer", "num_layers")
    heads = _int(config, "num_attention_heads", "n_head")
    kv_heads = _int(config, "num_key_value_heads", "num_kv_heads", default=heads)
    head_dim = config.get("head_dim") or hidden // heads
    model_type = str(config.get("model_type", ""))
    architectures = outer.get("architectures") or config.get("architectures") or [model_type or "?"]
    checkpoint_dtype = _dtype(outer.get("torch_dtype") or outer.get("dtype") or config.get("torch_dtype"))
    kinds, window = _layer_kinds(config, layers, model_type)
    mla = None
    mla_dims: dict = {}
    if config.get("kv_lora_rank"):
        mla = (int(config["kv_lora_rank"]), int(config["qk_rope_head_dim"]))
        mla_dims = {
            "q_lora_rank": config.get("q_lora_rank"),
            "qk_nope_head_dim": int(config["qk_nope_head_dim"]),
            "v_head_dim": int(config["v_head_dim"]),
        }
    experts = int(
        config.get("n_routed_experts") or config.get("num_experts") or config.get("num_local_experts") or 0
    )
    moe_layers: tuple[bool, ...] = ()
    moe_inter = shared = 0
    if experts:
        moe_inter = int(config.get("moe_intermediate_size") or config["intermediate_size"])
        shared = int(config.get("shared_expert_intermediate_size") or 0)
        if config.get("n_shared_experts"):
            shared = int(config["n_shared_experts"]) * moe_inter
        first_dense = int(config.get("first_k_dense_replace") or 0)
        step = int(config.get("decoder_sparse_step") or config.get("moe_layer_freq") or 1)
        dense_only = set(config.get("mlp_only_layers") or ())
        qwen = model_type.startswith("qwen")  # Qwen: layer i is sparse when (i + 1) % step == 0
        moe_layers = tuple(
            i >= first_dense and i not in dense_only and ((i + 1) if qwen else i) % step == 0
            for i in range(layers)
        )
    rotary_dim = int(head_dim * float(config.get("partial_rotary_factor", 1.0)))
    if mla is not None:
        rotary_dim = mla[1]
    return ModelSpec(
        source="config.json",
        architecture=str(architectures[0]),
        model_type=model_type,
        hidden=hidden,
        layers=layers,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=int(head_dim),
        intermediate=int(config.get("intermediate_size") or 4 * hidden),
        vocab=_int(config, "vocab_size"),
        tied_embeddings=_tied(outer, config, model_type),
        dtype=_resolve_dtype(checkpoint_dtype, dtype),
        max_position=int(config.get("max_position_embeddings") or 0),
        layer_kinds=kinds,
        sliding_window=window,
        mla=mla,
        mla_dims=mla_dims,
        experts=experts,
        experts_per_token=int(config.get("num_experts_per_tok") or 0),
        moe_intermediate=moe_inter,
        shared_intermediate=shared,
        moe_layers=moe_layers,
        qk_norm=model_type in ("qwen3", "qwen3_moe"),
        qkv_bias=model_type in ("qwen2", "qwen2_moe") or bool(config.get("attention_bias")),
        norms_per_layer=4 if model_type in ("gemma2", "gemma3", "gemma3_text") else 2,
        rotary_rows=_rotary_rows(config),
        rotary_dim=rotary_dim,
        notes=tuple(notes),
    )


# Model types whose transformers config class ties the output layer to the embeddings unless config.json
# says otherwise (`tie_word_embeddings: bool = True` in their configuration_*.py, transformers 5.19);
# Gemma's published config.json files leave the field out, and an untied guess adds the vocabulary
# matrix again (Gemma 2 9B: 10.16 B parameters instead of 9.24 B).
_TIED_BY_DEFAULT = ("gemma", "gemma2", "gemma3", "gemma3_text", "cohere", "cohere2", "starcoder2", "falcon")


def _tied(outer: dict, config: dict, model_type: str) -> bool:
    for source in (outer, config):
        if source.get("tie_word_embeddings") is not None:
            return bool(source["tie_word_embeddings"])
    return model_type in _TIED_BY_DEFAULT or str(outer.get("model_type", "")) in _TIED_BY_DEFAULT


def _int(config: dict, *names: str, default: int | None = None) -> int:
    for name in names:
        if config.get(name) is not None:
            return int(config[name])
    if default is not None:
        return default
    raise KeyError(names[0])


def _dtype(value: object) -> str:
    name = str(value or "bfloat16").replace("torch.", "")
    return {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "float": "float32"}.get(name, name)


def _resolve_dtype(checkpoint: str, requested: str) -> str:
    """vLLM's --dtype: `auto` takes the checkpoint's dtype, except float32, which it serves in the
    platform's first dtype: bfloat16 on GPUs from Ampere on (vLLM 0.32 `_resolve_auto_dtype`; Gemma 2 and
    3 refuse float16 there). Two bytes either way."""
    if requested in ("auto", "", None):
        return (
            "bfloat16" if checkpoint == "float32" else checkpoint if checkpoint in DTYPE_BYTES else "bfloat16"
        )
    name = _dtype(requested)
    if name not in DTYPE_BYTES:
        raise CapacityError(f"--dtype {requested}: one of auto, bfloat16, float16, float32")
    return name


def _layer_kinds(config: dict, layers: int, model_type: str) -> tuple[tuple[str, ...], int | None]:
    """Which layers keep per-token KV: `layer_types` when the config lists them, else the families'
    rules (Gemma 2 alternates, Gemma 3 has every n-th layer global, Mistral slides everywhere)."""
    window = config.get("sliding_window") if isinstance(config.get("sliding_window"), int) else None
    types = config.get("layer_types")
    if isinstance(types, list) and len(types) == layers:
        kinds = tuple(FULL if t in _FULL_NAMES else SLIDING if t in _SLIDING_NAMES else OTHER for t in types)
        if SLIDING in kinds and window is None:
            window = config.get("attention_chunk_size")
        return kinds, window if SLIDING in kinds else None
    if window and model_type == "gemma2":
        return tuple(SLIDING if i % 2 == 0 else FULL for i in range(layers)), window
    pattern = config.get("sliding_window_pattern")
    if window and isinstance(pattern, int) and pattern > 1:
        return tuple(FULL if (i + 1) % pattern == 0 else SLIDING for i in range(layers)), window
    if window and (model_type == "mistral" or config.get("use_sliding_window")):
        start = int(config.get("max_window_layers") or 0) if config.get("use_sliding_window") else 0
        return tuple(SLIDING if i >= start else FULL for i in range(layers)), window
    return (FULL,) * layers, None


def _rotary_rows(config: dict) -> int:
    """Rows of vLLM's rotary cos/sin cache: the context length, times the factor for YaRN and dynamic NTK."""
    rows = int(config.get("max_position_embeddings") or 0)
    scaling = config.get("rope_scaling") or {}
    kind = scaling.get("rope_type") or scaling.get("type")
    if kind in ("yarn", "dynamic", "deepseek_yarn"):
        original = scaling.get("original_max_position_embeddings") or rows
        rows = int(original * float(scaling.get("factor", 1.0)))
    return rows


def _quantization(config: dict | None) -> Quantization | None:
    if not isinstance(config, dict):
        return None
    method = str(config.get("quant_method", "")).lower()
    if method == "fp8":
        block = config.get("weight_block_size")
        return Quantization("fp8", 8, block=tuple(block) if block else None)
    if "bits" in config or "w_bit" in config:
        bits = int(config.get("bits") or config.get("w_bit"))
        group = config.get("group_size") or config.get("q_group_size")
        return Quantization(method or "int", bits, group_size=int(group) if group and group > 0 else None)
    raise CapacityError(
        f"quantization {method or '?'}: weights cannot be computed from config.json; "
        "give the model directory with its model.safetensors.index.json"
    )


def _checkpoint_bytes(directory: Path) -> int | None:
    """The checkpoint's size: `metadata.total_size` of model.safetensors.index.json, or the tensors of
    a single model.safetensors (header only)."""
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            return int(json.loads(index.read_text(encoding="utf-8"))["metadata"]["total_size"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CapacityError(f"{index}: no metadata.total_size ({exc})") from None
    single = directory / "model.safetensors"
    if single.is_file():
        return _safetensors_bytes(single)
    return None


_MAX_HEADER = 100 * MIB


def _safetensors_bytes(path: Path) -> int:
    """Data bytes of one safetensors file, from its JSON header (8-byte length, then the header)."""
    with path.open("rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        if not 0 < size <= _MAX_HEADER:
            raise CapacityError(f"{path}: not a safetensors file (header length {size})")
        header = json.loads(handle.read(size))
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    return max(ends, default=0)
