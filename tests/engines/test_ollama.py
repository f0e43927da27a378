"""Ollama answers normalized onto llm_*; fixture origins: tests/fixtures/engines/README.md."""

from __future__ import annotations

import json

import pytest

from exporter.engines.base import Scraped
from exporter.engines.parse import ParseError
from exporter.engines.registry import ENGINES
from exporter.engines.schema import Normalized
from tests.engines.normalizing import FIXTURES, one


def ollama(ps_name: str) -> Normalized:
    documents = {
        "/api/ps": json.loads((FIXTURES / "ollama" / ps_name).read_text()),
        "/api/version": json.loads((FIXTURES / "ollama" / "constructed-api-version.json").read_text()),
    }
    return ENGINES["ollama"].normalize(Scraped(documents=documents), None)


def test_ollama_docs_api_ps() -> None:
    out = ollama("docs-api-ps.json")
    m = {"model": "mistral:latest"}
    assert one(out, "llm_model_memory_bytes", **m) == 5137025024
    assert one(out, "llm_model_vram_bytes", **m) == 5137025024
    # 2024-06-04T14:38:31.83753-07:00
    assert one(out, "llm_model_expiry_timestamp_seconds", **m) == pytest.approx(1717537111.83753)
    assert one(out, "llm_engine_info", model="mistral:latest", version="0.33.0-rc2") == 1
    assert "llm_model_context_length_tokens" not in out.families()


def test_ollama_partial_offload_and_nanoseconds() -> None:
    out = ollama("constructed-api-ps-partial-offload.json")
    m = {"model": "qwen3:32b"}
    assert one(out, "llm_model_vram_bytes", **m) < one(out, "llm_model_memory_bytes", **m)
    assert one(out, "llm_model_context_length_tokens", model="llama3.2:1b") == 4096
    assert one(out, "llm_model_expiry_timestamp_seconds", **m) == pytest.approx(1795269900.123456)


@pytest.mark.parametrize(
    "ps",
    [
        {"models": [{"size": 1}]},
        {"models": [{"name": "m", "size": "big"}]},
        {"models": [{"name": "m", "expires_at": 5}]},
        {"models": [{"name": "m", "expires_at": "yesterday"}]},
    ],
)
def test_ollama_malformed_entries_are_parse_errors(ps: dict) -> None:
    with pytest.raises(ParseError):
        documents = {"/api/ps": ps, "/api/version": {"version": "1"}}
        ENGINES["ollama"].normalize(Scraped(documents=documents), None)
