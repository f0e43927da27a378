"""HTTP side of the load generator: /metrics, /healthz and the control API under /runs.

Served by uvicorn inside the load generator's own event loop, so /metrics reads the live counters
from the loop that updates them (one consistent snapshot per scrape).

  GET  /runs             runs known (the last few), newest last
  POST /runs             start a run; body = the scenario as JSON (YAML keys); 409 if one is active
  GET  /runs/{id}        state, live progress, and the report once finished
  POST /runs/{id}/stop   stop issuing; in-flight requests get the grace period
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import OrderedDict

import uvicorn
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from loadgen.client import ClientError
from loadgen.metrics import LoadgenCollector
from loadgen.runner import Run
from loadgen.scenario import Scenario, ScenarioError
from loadgen.workloads import WorkloadError

log = logging.getLogger("loadgen.api")


class RunManager:
    """Runs started here, at most one active at a time, the last `keep` remembered."""

    def __init__(self, collector: LoadgenCollector, keep: int = 10) -> None:
        self.collector = collector
        self.keep = keep
        self.runs: OrderedDict[str, Run] = OrderedDict()
        self.tasks: dict[str, asyncio.Task] = {}

    @property
    def active(self) -> Run | None:
        return next(
            (run for run in self.runs.values() if run.state in ("pending", "running", "stopping")), None
        )

    def adopt(self, run: Run) -> None:
        self.runs[run.run_id] = run
        while len(self.runs) > self.keep:
            old_id, _ = self.runs.popitem(last=False)
            self.tasks.pop(old_id, None)

    def start(self, values: dict) -> Run:
        if self.active is not None:
            raise HTTPException(409, f"run {self.active.run_id} is still active; stop it first")
        try:
            scenario = Scenario.build(None, {str(k).replace("-", "_"): v for k, v in values.items()})
        except (ScenarioError, TypeError, ValueError) as exc:
            raise HTTPException(400, str(exc)) from exc
        if scenario.run_id in self.runs:
            raise HTTPException(409, f"run id {scenario.run_id} already used")
        scenario.output_json = scenario.output_json or None
        run = Run(scenario, self.collector)
        self.adopt(run)
        self.tasks[run.run_id] = asyncio.create_task(self._execute(run))
        return run

    async def _execute(self, run: Run) -> None:
        try:
            await run.execute()
        except (ScenarioError, WorkloadError, ClientError) as exc:
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


def describe(run: Run) -> dict:
    body = {
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
    return body


def create_app(collector: LoadgenCollector, manager: RunManager) -> FastAPI:
    app = FastAPI(title="llmobs load generator", docs_url=None, redoc_url=None)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    @app.get("/runs")
    async def list_runs() -> list[dict]:
        return [describe(run) for run in manager.runs.values()]

    @app.post("/runs", status_code=201)
    async def start_run(values: dict) -> dict:
        return describe(manager.start(values))

    @app.get("/runs/{run_id}")
    async def get_run(run_id: str) -> dict:
        return describe(_find(manager, run_id))

    @app.post("/runs/{run_id}/stop", status_code=202)
    async def stop_run(run_id: str) -> JSONResponse:
        run = _find(manager, run_id)
        run.stop()
        return JSONResponse(describe(run), status_code=202)

    return app


def _find(manager: RunManager, run_id: str) -> Run:
    run = manager.runs.get(run_id)
    if run is None:
        raise HTTPException(404, f"no run {run_id!r}")
    return run


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
    """uvicorn on a socket we bound ourselves (so a busy port is a clear error, not an exit)."""

    def __init__(self, app: FastAPI, address: str) -> None:
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
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        self.server = _Server(config)
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))

    async def close(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task
        self.sock.close()
