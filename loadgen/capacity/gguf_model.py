"""A model's shape from a GGUF file (llama.cpp, Ollama), read with the `gguf` package
(`pip install 'llmobs[gguf]'`): the metadata gives the attention shape, the tensor table gives the
weights' exact bytes in whatever quantization the file uses. Only the header is read."""

from __future__ import annotations

from pathlib import Path

from loadgen.capacity.errors import CapacityError
from loadgen.capacity.model import FULL, OTHER, SLIDING, ModelSpec, Tensor


def load_gguf(path: Path) -> ModelSpec:
    try:
        import gguf
    except ImportError:
        raise CapacityError(
            "reading a .gguf file needs the gguf package: pip install 'llmobs[gguf]'"
        ) from None
    try:
        reader = gguf.GGUFReader(path)
    except FileNotFoundError:
        raise CapacityError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise CapacityError(f"{path}: not a readable GGUF file ({exc})") from None

    def field(key: str, default: object = None) -> object:
        found = reader.fields.get(key)
        return default if found is None else found.contents()

    arch = str(field("general.architecture", "llama"))

    def number(key: str, default: int | None = None) -> int:
        value = field(f"{arch}.{key}", default)
        if value is None:
            raise CapacityError(f"{path}: no {arch}.{key} in the GGUF metadata")
        return int(max(value) if isinstance(value, list) else value)

    layers = number("block_count")
    hidden = number("embedding_length")
    heads = number("attention.head_count")
    kv_field = field(f"{arch}.attention.head_count_kv", heads)
    per_layer_kv = kv_field if isinstance(kv_field, list) else [int(kv_field)] * layers
    key_len = number("attention.key_length", hidden // heads)
    value_len = number("attention.value_length", key_len)
    window = field(f"{arch}.attention.sliding_window")
    kinds = tuple(FULL if kv else OTHER for kv in per_layer_kv)
    if window:
        pattern = field(f"{arch}.attention.sliding_window_pattern")
        if isinstance(pattern, list) and len(pattern) == layers:
            kinds = tuple(
                SLIDING if slide and k == FULL else k for slide, k in zip(pattern, kinds, strict=True)
            )
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    vocab = len(tokens.data) if tokens is not None else number("vocab_size", 0)
    tensors = tuple(
        Tensor(t.name, int(t.n_elements), int(t.n_bytes) / max(1, int(t.n_elements))) for t in reader.tensors
    )
    return ModelSpec(
        source="GGUF",
        architecture=arch,
        model_type=arch,
        hidden=hidden,
        layers=layers,
        heads=heads,
        kv_heads=max(per_layer_kv),
        head_dim=(key_len + value_len) // 2,
        intermediate=number("feed_forward_length", 4 * hidden),
        vocab=vocab,
        tied_embeddings=not any(t.name == "output.weight" for t in reader.tensors),
        dtype="float16",
        max_position=number("context_length", 0),
        layer_kinds=kinds,
        sliding_window=int(window) if window and SLIDING in kinds else None,
        checkpoint_bytes=sum(int(t.n_bytes) for t in reader.tensors),
        gguf_tensors=tensors,
    )
