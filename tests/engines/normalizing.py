"""Shared by the per-engine normalization tests (tests/engines/test_<kind>.py): read a fixture, normalize
it with its engine's adapter, pick points and histograms out of the result."""

from __future__ import annotations

from pathlib import Path

from exporter.engines.base import Scraped
from exporter.engines.detect import engine_for_payload
from exporter.engines.parse import parse
from exporter.engines.registry import ENGINES
from exporter.engines.schema import Normalized

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "engines"
LLAMA_PROPS = {
    "model_alias": "qwen3-4b-shape",
    "build_info": "b1-0c1e570",
    "total_slots": 4,
    "default_generation_settings": {"n_ctx": 512},
}


def normalize(kind: str, name: str, documents: dict | None = None, model: str | None = None) -> Normalized:
    exposition = parse((FIXTURES / kind / name).read_text())
    assert engine_for_payload(exposition) is ENGINES[kind], "detection picks the engine that produced it"
    return ENGINES[kind].normalize(Scraped(exposition, documents or {}), model)


def matching(items, family: str, labels: dict[str, str]) -> list:
    return [i for i in items if i.family == family and all(i.labels.get(k) == v for k, v in labels.items())]


def one(out: Normalized, family: str, **labels: str) -> float:
    matches = matching(out.points, family, labels)
    assert len(matches) == 1, (family, labels, matches)
    return matches[0].value


def histogram(out: Normalized, family: str, **labels: str):
    matches = matching(out.histograms, family, labels)
    assert len(matches) == 1, (family, labels, matches)
    return matches[0]
