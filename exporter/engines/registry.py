"""The engines the exporter knows: the one list, in detection order.

Each adapter's file declares its kind, metrics path, wire-name prefixes and process names (see
`engines/base.py`); every other list of engines is derived from this one: the `kind=` values the
configuration accepts, the host collector's engine-process recognisers and discovery's candidates.
Adding an engine: exporter/README.md, "Adding an engine".
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from exporter.engines.base import Engine
from exporter.engines.llamacpp import LlamaCpp
from exporter.engines.lmdeploy import LmDeploy
from exporter.engines.nim import Nim
from exporter.engines.ollama import Ollama
from exporter.engines.sglang import Sglang
from exporter.engines.tgi import Tgi
from exporter.engines.transformers import Transformers
from exporter.engines.triton_trtllm import TritonTrtllm
from exporter.engines.trtllm_serve import TrtllmServe
from exporter.engines.vllm import Vllm
from exporter.engines.xinference import Xinference

ADAPTERS: tuple[type[Engine], ...] = (
    Vllm, Sglang, LlamaCpp, LmDeploy, Xinference, Tgi, TritonTrtllm, TrtllmServe, Nim, Ollama, Transformers,
)  # fmt: skip
ENGINES: Mapping[str, Engine] = MappingProxyType({adapter.kind: adapter() for adapter in ADAPTERS})
# engine_kind values of docs/metrics.md, and the `kind=` a target accepts
ENGINE_KINDS: tuple[str, ...] = tuple(ENGINES)
# engine_kind -> regex matched against a process's whole program name (collectors/host.py program_names)
PROCESS_NAMES: Mapping[str, str] = MappingProxyType(
    {kind: engine.process_names for kind, engine in ENGINES.items() if engine.process_names}
)

__all__ = ["ADAPTERS", "ENGINES", "ENGINE_KINDS", "PROCESS_NAMES"]
