"""The memory limit beside a sweep's measured capacity (a report JSON of `llmobs-loadgen run --sweep`).

A running request holds KV for its prompt and the output so far; at its longest, prompt + output. So the
KV cache carries at most capacity_tokens / (mean prompt + mean output, rounded up to blocks) requests of
the measured workload at once. Closed loop: the users at the capacity level are the requests in flight.
Open loop: in flight = requests/s x mean E2E (Little's law).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from loadgen.capacity.errors import CapacityError
from loadgen.capacity.plan import Plan

MAX_REPORT_BYTES = 64 * 1024 * 1024


def beside_sweep(plan: Plan, path: str | Path) -> list[str]:
    report = _read(Path(path))
    sweep = report.get("sweep")
    phases = report.get("phases") or []
    if not isinstance(sweep, dict) or not phases:
        raise CapacityError(f"{path}: not a sweep report (no 'sweep' or no phases; run with --sweep)")
    met = [p for p in phases if (p.get("slo") or {}).get("met")]
    unit = sweep.get("unit", "")
    if not met:
        return [
            f"The sweep in {path} found no level that meets its SLOs, so there is no measured "
            "capacity to set beside the memory limit."
        ]
    phase = met[-1]
    succeeded = phase["requests"]["succeeded"] or 1
    prompt = phase["tokens"]["prompt"] / succeeded
    output = phase["tokens"]["output"] / succeeded
    block = plan.settings.block_size
    per_request = math.ceil((prompt + output) / block) * block
    fits = plan.capacity_tokens // per_request if per_request else 0
    level = sweep.get("capacity")
    if unit.startswith("concurrent"):
        in_flight, how = float(level), f"{level:g} concurrent users"
    else:
        rate = phase["throughput"]["requests_per_s"] or 0.0
        e2e = (phase.get("latency_s", {}).get("e2e") or {}).get("mean") or 0.0
        in_flight, how = (
            rate * e2e,
            f"{level:g} requests/s (x {e2e:.2f} s mean E2E = {rate * e2e:.1f} in flight)",
        )
    objectives = ", ".join((phase.get("slo") or {}).get("objectives") or [])
    lines = [
        f"Measured capacity at the SLOs ({objectives}): {how}.",
        f"Memory limit for this workload: {plan.capacity_tokens:,} tokens of KV cache hold {fits:,} requests "
        f"of {prompt:,.0f} prompt + {output:,.0f} output tokens at once (at their longest, rounded up to "
        f"blocks of {block}).",
    ]
    if in_flight <= fits:
        lines.append(
            f"{in_flight:,.0f} in flight is within the memory limit: compute and the SLOs, not the "
            "KV cache, set the capacity; more memory would not carry more users at these SLOs."
        )
    else:
        lines.append(
            f"{in_flight:,.0f} in flight is beyond the memory limit of {fits:,}: the rest wait in the "
            "engine's queue or are preempted (KV cache full); more KV memory (fp8 KV, a larger "
            "gpu_memory_utilization, another GPU) would raise it."
        )
    return lines


def _read(path: Path) -> dict:
    try:
        if path.stat().st_size > MAX_REPORT_BYTES:
            raise CapacityError(f"{path}: larger than {MAX_REPORT_BYTES} bytes; not a report")
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CapacityError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise CapacityError(f"{path}: not a report JSON ({exc})") from None
    if not isinstance(report, dict):
        raise CapacityError(f"{path}: not a report JSON object")
    return report
