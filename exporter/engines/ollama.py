"""Ollama: no Prometheus endpoint, so `/api/ps` (loaded models) and `/api/version` are polled.

Per loaded model (capped): memory size, the part in VRAM, keep-alive expiry and context length. Ollama
publishes no request, token or latency figures outside its generation responses; those concepts are
absent for it. A malformed answer is a parse error, never a partial guess.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from exporter.engines.base import Engine, Fetch, Scraped, add_info
from exporter.engines.parse import Exposition, ParseError
from exporter.engines.schema import Normalized

MAX_MODELS = 64


class Ollama(Engine):
    kind = "ollama"
    metrics_path = "/api/ps"
    prefixes = ()
    process_names = r"ollama"

    def detect(self, exposition: Exposition) -> bool:
        return False  # detected by its /api/version answer, not by an exposition

    async def scrape(self, fetch: Fetch, exposition: Exposition | None = None) -> Scraped:
        version = await fetch.json("/api/version")
        ps = await fetch.json("/api/ps")
        if not is_version_document(version):
            raise ParseError('/api/version is not {"version": ...}')
        if not isinstance(ps, dict) or not isinstance(ps.get("models"), list):
            raise ParseError('/api/ps is not {"models": [...]}')
        return Scraped(documents={"/api/version": version, "/api/ps": ps})

    def normalize(self, scraped: Scraped, model: str | None) -> Normalized:
        version = scraped.documents["/api/version"]["version"]
        out = Normalized()
        names = []
        for entry in scraped.documents["/api/ps"]["models"][:MAX_MODELS]:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise ParseError("/api/ps model entry without a name")
            labels = {"model": entry["name"]}
            names.append(entry["name"])
            for key, family in (("size", "llm_model_memory_bytes"), ("size_vram", "llm_model_vram_bytes"),
                                ("context_length", "llm_model_context_length_tokens")):  # fmt: skip
                if key in entry:
                    out.add(family, _number(entry[key], key), labels)
            if "expires_at" in entry:
                out.add("llm_model_expiry_timestamp_seconds", _timestamp(entry["expires_at"]), labels)
        add_info(out, names or [model or ""], version)
        return out


def is_version_document(document: Any) -> bool:
    return isinstance(document, dict) and isinstance(document.get("version"), str)


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParseError(f"/api/ps {key} is not a number: {value!r}")
    return float(value)


def _timestamp(value: Any) -> float:
    """Go's RFC 3339 with nanoseconds (`2024-06-04T14:38:31.83753-07:00`) -> Unix seconds."""
    if not isinstance(value, str):
        raise ParseError(f"/api/ps expires_at is not a string: {value!r}")
    text = value.replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[:digits][:6].ljust(6, '0')}{rest[digits:]}"
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ParseError(f"/api/ps expires_at is not RFC 3339: {value!r}") from None
