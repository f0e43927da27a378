"""A model's shape from its Hugging Face `config.json` (the `text_config` of a multimodal model), and the
weights' size from the checkpoint beside it when there is one (the safetensors index's `total_size`, or a
single file's header). What a config cannot tell is said in the spec's `notes` (model.py has the sizing).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from loadgen.capacity.errors import CapacityError
from loadgen.capacity.model import DTYPE_BYTES, FULL, MIB, OTHER, SLIDING, ModelSpec, Quantization

__all__ = ["from_config", "load_config"]

_FULL_NAMES = ("full_attention", "attention", "global_attention")
_SLIDING_NAMES = ("sliding_attention", "local_attention", "chunked_attention")


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
