"""The HTTP face of the simulator: vLLM's OpenAI-compatible API, /health, /metrics, faults.

Requests are parsed and admitted here; responses.py writes them out in vLLM 0.33's shapes. Errors
are `{"error": {"message", "type", "param", "code"}}`.

Simulator-only endpoints live under /_simulator/ (stats, restart, sends) and are not part of vLLM's API.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from simulator import text
from simulator.engine import AdmissionError, Engine, Sequence
from simulator.errors import SimulatorError
from simulator.faults import Faults
from simulator.http_metrics import HttpMetrics
from simulator.metrics import build_registry, render
from simulator.responses import CompletionResponse, FaultPlan, InjectedDrop, ParsedRequest
from simulator.sends import SendLog

VERSION = "0.33.0+llmobs.simulator"
VOCABULARY_SIZE = 151936  # Qwen3's; token-id prompts beyond it are rejected like vLLM rejects them
log = logging.getLogger("simulator")


class RequestError(SimulatorError):
    def __init__(
        self, message: str, status: int = 400, error_type: str = "BadRequestError", param=None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.param = param


class _HideInjectedDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], InjectedDrop))


def error_response(message: str, status: int, error_type: str, param: str | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": error_type, "param": param, "code": status}}
    return JSONResponse(body, status_code=status)


class Simulator:
    def __init__(
        self,
        engines: list[Engine],
        model: str,
        faults: Faults,
        seed: int = 0,
        sends: SendLog | None = None,
    ) -> None:
        self.engines = engines
        self.sends = sends
        self._next_start = 0
        self.model = model
        self.faults = faults
        self.rng = random.Random(seed ^ 0xFA17)
        self.registry = build_registry(engines, model)
        self.in_flight = 0
        self.created = int(time.time())

    # -- requests ---------------------------------------------------------------------------

    def parse(self, kind: str, body: Any, request_key: str = "") -> ParsedRequest:
        if not isinstance(body, dict):
            raise RequestError("The request body must be a JSON object.")
        model = body.get("model")
        if model is not None and model != self.model:
            raise RequestError(f"The model `{model}` does not exist.", 404, "NotFoundError", "model")
        if kind == "chat":
            prompt_ids = text.chat_token_ids(_messages(body.get("messages")))
        else:
            prompt_ids = _prompt_ids(body.get("prompt"))
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is not None and (type(max_tokens) is not int or max_tokens < 1):
            raise RequestError("max_tokens must be a positive integer.", param="max_tokens")
        n = body.get("n", 1)
        if n not in (1, None):
            raise RequestError("The simulator supports n=1 only.", param="n")
        stream = _flag(body, "stream")
        options = body.get("stream_options") or {}
        if not isinstance(options, dict):
            raise RequestError("stream_options must be an object.", param="stream_options")
        if options and not stream:
            raise RequestError(
                "Stream options can only be defined when `stream=True`.", param="stream_options"
            )
        min_tokens = body.get("min_tokens", 0)
        if type(min_tokens) is not int or min_tokens < 0:
            raise RequestError("min_tokens must be a non-negative integer.", param="min_tokens")
        return ParsedRequest(
            kind=kind,
            prompt_ids=prompt_ids,
            max_tokens=max_tokens,
            stream=stream,
            include_usage=bool(options.get("include_usage")),
            continuous_usage=bool(options.get("continuous_usage_stats")),
            ignore_eos=_flag(body, "ignore_eos"),
            min_tokens=min_tokens,
            request_key=request_key,
        )

    def admit(self, kind: str, raw: bytes, request_key: str = "") -> Response:
        """One completion request: parsed, maybe failed by an injected fault, else into the engine."""
        try:
            body = json.loads(raw)
        except ValueError:
            raise RequestError("The request body is not valid JSON.") from None
        parsed = self.parse(kind, body, request_key)
        status = self.injected_error()
        if status is not None:
            return error_response(f"Injected fault: HTTP {status}.", status, "InjectedFault")
        engine = self.choose_engine()
        try:
            seq = engine.add(
                uuid.uuid4().hex, parsed.prompt_ids, parsed.max_tokens, parsed.ignore_eos, parsed.min_tokens
            )
        except AdmissionError as exc:
            return error_response(str(exc), exc.status, exc.error_type)
        return CompletionResponse(self, engine, parsed, seq, self.fault_plan(seq))

    def choose_engine(self) -> Engine:
        """vLLM's data-parallel balancing: the least loaded engine (running + waiting, waiting weighed up
        when the KV cache is over half full), scanning from a rotating start so ties spread out."""
        best, best_score = self.engines[0], float("inf")
        count = len(self.engines)
        for offset in range(count):
            engine = self.engines[(self._next_start + offset) % count]
            score = engine.num_running + engine.num_waiting
            score += engine.num_waiting * 6.0 * max(0.0, engine.pool.usage - 0.5)
            if score < best_score:
                best, best_score = engine, score
        self._next_start = (self._next_start + 1) % count
        return best

    @property
    def is_down(self) -> bool:
        return any(engine.is_down for engine in self.engines)

    def restart(self, down_seconds: float) -> int:
        for engine in self.engines:
            engine.restart(down_seconds)
        return self.engines[0].restarts

    def stats(self) -> dict[str, Any]:
        engines = self.engines
        timings = [engine.timing for engine in engines]
        steps = sum(timing.steps for timing in timings)
        return {
            "profile": engines[0].profile.name,
            "model": self.model,
            "data_parallel_size": len(engines),
            "running": sum(engine.num_running for engine in engines),
            "waiting": sum(engine.num_waiting for engine in engines),
            "kv_cache_usage": [engine.pool.usage for engine in engines],
            "restarts": engines[0].restarts,
            "step_timing": {
                "steps": steps,
                "lag_mean_seconds": sum(timing.lag_total for timing in timings) / steps if steps else 0.0,
                "lag_max_seconds": max(timing.lag_max for timing in timings),
                "lag_p99_recent_seconds": max(
                    timing.as_dict()["lag_p99_recent_seconds"] for timing in timings
                ),
            },
        }

    def injected_error(self) -> int | None:
        roll = self.rng.random()
        for status, rate in self.faults.error_rates.items():
            if roll < rate:
                return status
            roll -= rate
        return None

    def fault_plan(self, seq: Sequence) -> FaultPlan:
        faults = self.faults
        expected = max(2, min(seq.max_tokens, seq.stop_at or seq.max_tokens))
        stall = faults.stall_probability and self.rng.random() < faults.stall_probability
        drop = faults.drop_probability and self.rng.random() < faults.drop_probability
        return FaultPlan(
            stall_at=expected // 2 if stall else None,
            drop_at=expected // 2 if drop else None,
        )


def _flag(body: dict, key: str) -> bool:
    value = body.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RequestError(f"{key} must be a boolean.", param=key)
    return value


def _messages(raw: Any) -> list[tuple[str, str]]:
    if not isinstance(raw, list) or not raw:
        raise RequestError("messages must be a non-empty list.", param="messages")
    messages = []
    for message in raw:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RequestError("Each message must be an object with a string `role`.", param="messages")
        content = message.get("content")
        if content is None:
            content = ""
        elif isinstance(content, list):
            parts = []
            for part in content:
                if (
                    not isinstance(part, dict)
                    or part.get("type") != "text"
                    or not isinstance(part.get("text"), str)
                ):
                    raise RequestError("The simulator accepts text content parts only.", param="messages")
                parts.append(part["text"])
            content = "\n".join(parts)
        elif not isinstance(content, str):
            raise RequestError("Message content must be a string or a list of parts.", param="messages")
        messages.append((message["role"], content))
    return messages


def _prompt_ids(prompt: Any) -> list[int]:
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return text.token_ids(prompt)
    if isinstance(prompt, list) and prompt and all(type(token) is int for token in prompt):
        if not all(0 <= token < VOCABULARY_SIZE for token in prompt):
            raise RequestError(
                f"Token ids must be in [0, {VOCABULARY_SIZE}): out of vocabulary.", param="prompt"
            )
        return list(prompt)
    raise RequestError(
        "prompt must be a string or a list of token ids (one prompt per request).", param="prompt"
    )


COMPLETION_PATHS = {"/v1/chat/completions": "chat", "/v1/completions": "completion"}


MAX_BODY_BYTES = 32 * 1024 * 1024  # a 128k-token prompt as text or token ids is a few MB


async def read_body(receive: Any) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionResetError("client went away before sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:  # refused as it arrives: never held whole
            limit = f"{MAX_BODY_BYTES >> 20} MiB"
            raise RequestError(f"The request body is over {limit}.", 413, "PayloadTooLarge")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def completion_endpoint(sim: Simulator, kind: str, scope: dict, receive: Any, send: Any) -> None:
    """The hot path, as a plain ASGI handler: no routing or validation layers per request."""
    try:
        response = sim.admit(kind, await read_body(receive), _request_key(scope) if sim.sends else "")
    except ConnectionResetError:
        return
    except RequestError as exc:
        response = error_response(str(exc), exc.status, exc.error_type, exc.param)
    await response(scope, receive, send)


def _request_key(scope: dict) -> str:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            return value.decode("latin-1")[:200]
    return ""


def bearer_matches(scope: dict, key_digest: bytes) -> bool:
    """vLLM's --api-key check: `Authorization: Bearer KEY`, compared in constant time."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            digest = hashlib.sha256(token.encode()).digest()
            return scheme.lower() == "bearer" and secrets.compare_digest(digest, key_digest)
    return False


def create_app(sim: Simulator, api_key: str | None = None) -> Any:
    """The ASGI app: the two completion endpoints directly, everything else through FastAPI. With an
    API key, paths under /v1 need it (as in vLLM); /health and /metrics stay open."""
    api = create_api(sim)
    key_digest = hashlib.sha256(api_key.encode()).digest() if api_key else None
    unauthorized = JSONResponse({"error": "Unauthorized"}, status_code=401)

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if (
            key_digest is not None
            and scope["type"] == "http"
            and scope.get("method") != "OPTIONS"
            and scope["path"].startswith("/v1")
            and not bearer_matches(scope, key_digest)
        ):
            await unauthorized(scope, receive, send)
            return
        kind = COMPLETION_PATHS.get(scope.get("path", "")) if scope["type"] == "http" else None
        if kind is not None and scope["method"] == "POST":
            await completion_endpoint(sim, kind, scope, receive, send)
        else:
            await api(scope, receive, send)

    routes = {*COMPLETION_PATHS, *(getattr(route, "path", "") for route in api.routes)}
    return HttpMetrics(sim.registry, routes).wrap(app)


def create_api(sim: Simulator) -> FastAPI:
    engines = sim.engines
    logging.getLogger("uvicorn.error").addFilter(_HideInjectedDrops())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        for engine in engines:
            engine.start()
        restarter = None
        if sim.faults.restart_every_seconds:
            restarter = asyncio.create_task(_restart_periodically(sim))
        yield
        if restarter is not None:
            restarter.cancel()
        for engine in engines:
            await engine.stop()

    app = FastAPI(
        title="llmobs vLLM simulator", version=VERSION, docs_url=None, redoc_url=None, lifespan=lifespan
    )

    @app.exception_handler(RequestError)
    async def _request_error(_: Request, exc: RequestError) -> JSONResponse:
        return error_response(str(exc), exc.status, exc.error_type, exc.param)

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=503 if sim.is_down else 200)

    @app.get("/version")
    async def version() -> dict:
        return {"version": VERSION}

    @app.get("/load")
    async def load() -> dict:
        return {"server_load": sim.in_flight}

    @app.get("/metrics")
    async def metrics() -> Response:
        if sim.is_down:
            return Response("engine restarting\n", status_code=503, media_type="text/plain")
        return Response(render(sim.registry), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models")
    async def models() -> dict:
        card = {
            "id": sim.model,
            "object": "model",
            "created": sim.created,
            "owned_by": "vllm",
            "root": sim.model,
            "parent": None,
            "max_model_len": engines[0].profile.max_model_len,
        }
        return {"object": "list", "data": [card]}

    @app.get("/_simulator/stats")
    async def stats() -> dict:
        return sim.stats()

    @app.get("/_simulator/sends")
    async def sends() -> dict:
        if sim.sends is None:
            raise RequestError("start the simulator with --record-sends N to record sends.", 404, "NotFound")
        return sim.sends.as_dict()

    @app.post("/_simulator/restart")
    async def restart(down_seconds: float = 2.0) -> dict:
        if not 0 < down_seconds <= 600:
            raise RequestError("down_seconds must be in (0, 600].", param="down_seconds")
        return {"restarts": sim.restart(down_seconds), "down_seconds": down_seconds}

    return app


async def _restart_periodically(sim: Simulator) -> None:
    faults = sim.faults
    while True:
        await asyncio.sleep(faults.restart_every_seconds)
        log.warning("fault: engine restart (down %.1fs)", faults.restart_down_seconds)
        sim.restart(faults.restart_down_seconds)
