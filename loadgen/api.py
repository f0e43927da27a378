"""HTTP side of the load generator: /metrics, /healthz and the control API under /runs.

Served by uvicorn inside the load generator's own event loop, so /metrics reads the live counters
from the loop that updates them (one consistent snapshot per scrape).

  GET  /runs             runs known (the last few), newest last
  POST /runs             start a run; body = the scenario as JSON (YAML keys); 409 if one is active
  GET  /runs/{id}        state, live progress, and the report once finished
  POST /runs/{id}/stop   stop issuing; in-flight requests get the grace period

A caller of POST /runs chooses what this process connects to and sends, so the API takes no key
that reaches further (Policy): no secret sources (the API key is configured at start and sent only
to the allowed URLs), no output paths (reports are fetched with GET), and datasets or tokenizer
files only from the directory named at start. /runs can require a bearer token, and must on an
address other hosts can reach (exposure()); /metrics and /healthz stay open for Prometheus.
Connections have a deadline and a cap (api_protocol.py), so slow or idle clients cannot hold the
server's file descriptors.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import socket
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from loadgen import redact
from loadgen.api_protocol import ApiHttpStats, ApiLimits, MaxBody, guarded_protocol
from loadgen.errors import LoadgenError, ScenarioError
from loadgen.metrics import LoadgenCollector
from loadgen.redact import redact_url
from loadgen.scenario import Scenario
from loadgen.urls import normalize, under
from loadgen.workers import AnyRun, make_run

log = logging.getLogger("loadgen.api")


# scenario keys a caller of POST /runs may not set, and why
REFUSED_KEYS = {
    "api_key_env": "the API key is configured when the server starts (serve --api-key-env/--api-key-file)",
    "api_key_file": "the API key is configured when the server starts (serve --api-key-env/--api-key-file)",
    "output_json": "the API writes no files: fetch the report with GET /runs/{id}",
    "output_jsonl": "the API writes no files: fetch the report with GET /runs/{id}",
    "metrics_address": "runs started over the API are served on this server's /metrics",
    "metrics_linger": "this server's /metrics stays up after its runs anyway",
    "ca_file": "TLS settings are fixed when the server starts (serve --ca-file/--insecure)",
    "insecure": "TLS settings are fixed when the server starts (serve --ca-file/--insecure)",
    "proxy_from_env": "proxies are fixed when the server starts (serve --proxy-from-env)",
}


@dataclass(frozen=True)
class Policy:
    """What the control API accepts, fixed when the process starts."""

    token: str | None = None  # bearer token for /runs; None: open
    can_start: bool = True  # False under `llmobs-loadgen run`, which runs its own scenario only
    control: bool = True  # False: /runs is off (a `run` on a reachable address without a token)
    api_key_env: str | None = None  # the key runs send, and only to allowed_urls
    api_key_file: str | None = None
    allowed_urls: tuple[str, ...] = ()  # base URLs runs may target (prefixes); empty: any
    dataset_dir: Path | None = None  # datasets and tokenizer files must be inside; None: none allowed
    network: Mapping[str, object] = field(default_factory=dict)  # serve's --ca-file etc., for every run

    def scenario(self, values: dict) -> Scenario:
        """The scenario a POST /runs body asks for, within this policy (HTTPException otherwise)."""
        if not self.can_start:
            raise HTTPException(
                403,
                "this process runs its own scenario (llmobs-loadgen run); start runs over HTTP "
                "with llmobs-loadgen serve",
            )
        values = {str(k).replace("-", "_"): v for k, v in values.items()}
        for key, reason in REFUSED_KEYS.items():
            if values.get(key) not in (None, ""):
                raise HTTPException(400, f"{key} cannot be set over the API: {reason}")
        redact.register_url(str(values.get("url", "")))  # before anything can echo it
        if self.allowed_urls:  # compared, and then sent, as a server reads it (urls.normalize)
            url = str(values.get("url", ""))
            if not any(under(url, allowed) for allowed in self.allowed_urls):
                raise HTTPException(
                    403, "url is not one this server may send to (serve --allow-url): "
                    + ", ".join(redact_url(a) for a in self.allowed_urls),
                )  # fmt: skip
            values["url"] = normalize(url)
        if values.get("dataset"):
            kind, _, path = str(values["dataset"]).partition(":")
            values["dataset"] = f"{kind}:{self._local_file(path, 'dataset')}"
        if values.get("tokenizer") and not str(values["tokenizer"]).startswith("tiktoken:"):
            values["tokenizer"] = str(self._local_file(str(values["tokenizer"]), "tokenizer"))
        values["api_key_env"], values["api_key_file"] = self.api_key_env, self.api_key_file
        values.update(self.network)
        try:
            return Scenario.build(None, values)
        except LoadgenError as exc:
            raise HTTPException(400, redact.scrub(str(exc))) from exc

    def _local_file(self, path: str, what: str) -> Path:
        if self.dataset_dir is None:
            raise HTTPException(
                403, f"a {what} file can be used over the API only from a directory named at start "
                "(serve --dataset-dir DIR)",
            )  # fmt: skip
        root = self.dataset_dir.resolve()
        resolved = (root / path).resolve()  # symbolic links followed: a link out of DIR is refused
        if not resolved.is_relative_to(root):
            raise HTTPException(403, redact.bounded(f"{what} {path!r} is outside the dataset directory"))
        return resolved

    def authorized(self, header: str | None) -> bool:
        if not self.control:
            return False
        if self.token is None:
            return True
        scheme, _, given = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token.encode())


class RunManager:
    """Runs started here, at most one active at a time, the last `keep` remembered."""

    def __init__(self, collector: LoadgenCollector, keep: int = 10, policy: Policy | None = None) -> None:
        self.collector = collector
        self.keep = keep
        self.policy = policy or Policy()
        self.runs: OrderedDict[str, AnyRun] = OrderedDict()
        self.tasks: dict[str, asyncio.Task] = {}

    @property
    def active(self) -> AnyRun | None:
        return next(
            (run for run in self.runs.values() if run.state in ("pending", "running", "stopping")), None
        )

    def adopt(self, run: AnyRun) -> None:
        self.runs[run.run_id] = run
        while len(self.runs) > self.keep:
            old_id, _ = self.runs.popitem(last=False)
            self.tasks.pop(old_id, None)

    def start(self, values: dict) -> AnyRun:
        scenario = self.policy.scenario(values)
        if self.active is not None:
            raise HTTPException(409, f"run {self.active.run_id} is still active; stop it first")
        if scenario.run_id in self.runs:
            raise HTTPException(409, f"run id {scenario.run_id} already used")
        run = make_run(scenario, self.collector)
        self.adopt(run)
        self.tasks[run.run_id] = asyncio.create_task(self._execute(run))
        return run

    async def _execute(self, run: AnyRun) -> None:
        try:
            await run.execute()
        except LoadgenError as exc:  # the run recorded it as its error
            log.warning("run %s failed: %s", run.run_id, exc)
        except Exception as exc:  # the control server must outlive a broken run
            log.exception("run %s crashed", run.run_id)
            run.state, run.error = "failed", f"{type(exc).__name__}: {exc}"

    def force_all(self) -> None:
        if self.active is not None:
            self.active.force()

    async def stop_all(self) -> None:
        if self.active is not None:
            self.active.stop()
        if self.tasks:
            await asyncio.wait(list(self.tasks.values()))


def describe(run: AnyRun) -> dict:
    """What GET /runs shows of a run, scrubbed of every registered secret."""
    body: dict[str, object] = {
        "run_id": run.run_id,
        "scenario": run.scenario.name,
        "state": run.state,
        "error": run.error,
        "phase": run.metrics.phase,
        "progress": run.progress_line(),
        "sent": run.metrics.sent,
        "in_flight": run.metrics.in_flight,
        "outcomes": dict(run.metrics.outcomes),
    }
    if run.report is not None:
        body["report"] = run.report
    return redact.scrub_json(body)  # type: ignore[return-value]


def create_app(collector: LoadgenCollector, manager: RunManager) -> FastAPI:
    app = FastAPI(title="llmobs load generator", docs_url=None, redoc_url=None, openapi_url=None)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    app.state.http_stats = ApiHttpStats()  # HttpServer counts its connections here
    registry.register(app.state.http_stats)

    async def authorized(request: Request) -> None:
        if not manager.policy.control:
            raise HTTPException(403, CONTROL_OFF)
        if not manager.policy.authorized(request.headers.get("authorization")):
            raise HTTPException(
                401, "the control API needs its token: Authorization: Bearer TOKEN",
                headers={"WWW-Authenticate": "Bearer"},
            )  # fmt: skip

    control = [Depends(authorized)]

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own answer echoes the body back; it may hold a credential (a URL's userinfo)
        return JSONResponse({"detail": "the body must be a JSON object: the scenario"}, status_code=422)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    @app.get("/runs", dependencies=control)
    async def list_runs() -> list[dict]:
        return [describe(run) for run in manager.runs.values()]

    @app.post("/runs", status_code=201, dependencies=control)
    async def start_run(values: dict) -> dict:
        return describe(manager.start(values))

    @app.get("/runs/{run_id}", dependencies=control)
    async def get_run(run_id: str) -> dict:
        return describe(_find(manager, run_id))

    @app.post("/runs/{run_id}/stop", status_code=202, dependencies=control)
    async def stop_run(run_id: str) -> JSONResponse:
        run = _find(manager, run_id)
        run.stop()
        return JSONResponse(describe(run), status_code=202)

    return app


def _find(manager: RunManager, run_id: str) -> AnyRun:
    run = manager.runs.get(run_id)
    if run is None:
        raise HTTPException(404, redact.bounded(f"no run {run_id!r}"))
    return run


CONTROL_OFF = (
    "the control API is off: this process listens where other hosts can reach it and has no control "
    "token (--control-token-env VAR or --control-token-file FILE); /metrics and /healthz are served"
)


def loopback(address: str) -> bool:
    """Whether only this host can reach `address` (HOST:PORT): a loopback IP or `localhost`. A host
    name is taken as reachable from elsewhere (it may resolve to anything)."""
    host = parse_address(address)[0]
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure(address: str, token: str | None, can_start: bool) -> str | None:
    """Why /runs on `address` without `token` is unsafe, or None when it is not: `serve` refuses to
    start with it; `run` serves /metrics and leaves /runs off."""
    if token is not None or loopback(address):
        return None
    if can_start:
        return (
            f"serve on {address} without a control token would let anyone who reaches it start runs "
            "(load against any URL, or the --allow-url ones): set --control-token-env VAR or "
            "--control-token-file FILE, or listen on 127.0.0.1"
        )
    return f"/runs on {address} is off without a control token; /metrics and /healthz are served"


def parse_address(address: str) -> tuple[str, int]:
    """`HOST:PORT`, `:PORT` or `PORT`."""
    host, _, port = address.rpartition(":")
    try:
        number = int(port)
    except ValueError as exc:
        raise ScenarioError(f"bad listen address {address!r}: use HOST:PORT") from exc
    if not 0 <= number <= 65535:
        raise ScenarioError(f"bad port in {address!r}")
    return (host.strip("[]") or "0.0.0.0"), number


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the load generator stops runs cleanly itself."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


class HttpServer:
    """uvicorn on a socket we bound ourselves (so a busy port is a clear error, not an exit), its
    connections under deadlines and a cap (api_protocol.py)."""

    def __init__(self, app: FastAPI, address: str, limits: ApiLimits | None = None) -> None:
        host, port = parse_address(address)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            self.sock.close()
            raise ScenarioError(f"cannot listen on {address}: {exc.strerror}") from exc
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        limits = limits or ApiLimits()
        protocol = guarded_protocol(limits, getattr(app.state, "http_stats", None) or ApiHttpStats())
        # log_config=None: uvicorn's records go to our handlers (and their secret scrubber)
        config = uvicorn.Config(
            MaxBody(app, limits.max_body_bytes), http=protocol, log_level="warning", lifespan="off",
            access_log=False, log_config=None,
        )  # fmt: skip
        self.server = _Server(config)
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))

    async def close(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task
        self.sock.close()
