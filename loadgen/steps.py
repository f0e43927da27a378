"""One table across the steps of a run: level, throughput, TTFT, TPOT, per-user rates, errors, verdict.

Built from the report's phase summaries (JSON), so it is the same in the console and in the report
(`steps`). Columns size themselves to their widest cell, so no value runs into its neighbour however
large (a TTFT of 123,456 ms stays in its column).
"""

from __future__ import annotations

from collections.abc import Sequence

COLUMNS = (
    ("level", "step"),
    ("requests_per_s", "req/s"),
    ("output_tokens_per_s", "out tok/s"),
    ("ttft_p50_ms", "TTFT p50 ms"),
    ("ttft_p95_ms", "TTFT p95 ms"),
    ("tpot_p50_ms", "TPOT p50 ms"),
    ("user_tps_p5", "user tok/s p5"),
    ("user_tps_p50", "p50"),
    ("errors", "errors"),
    ("verdict", "SLOs"),
)


def rows(phases: Sequence[dict]) -> list[dict]:
    """One row per phase summary."""
    out = []
    for phase in phases:
        latency = phase.get("latency_s", {})

        def pick(metric: str, key: str, scale: float = 1.0, latency: dict = latency) -> float | None:
            value = (latency.get(metric) or {}).get(key)
            return None if value is None else value * scale

        out.append({
            "phase": phase["phase"],
            "level": phase.get("level_label") or phase["phase"],
            "requests_per_s": phase["throughput"]["requests_per_s"],
            "output_tokens_per_s": phase["throughput"]["output_tokens_per_s"],
            "ttft_p50_ms": pick("ttft", "median", 1000),
            "ttft_p95_ms": pick("ttft", "p95", 1000),
            "tpot_p50_ms": pick("tpot", "median", 1000),
            "user_tps_p5": pick("user_tps", "p5"),
            "user_tps_p50": pick("user_tps", "median"),
            "errors": phase["requests"]["failed"],
            "verdict": verdict(phase),
        })  # fmt: skip
    return out


def verdict(phase: dict) -> str:
    """meets / misses / interrupted / overloaded / - (no SLOs)."""
    if phase.get("interrupted"):
        return "cut short"
    if phase.get("overload"):
        return "overloaded"
    met = (phase.get("slo") or {}).get("met")
    return "-" if met is None else "meets" if met else "misses"


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render(table: Sequence[dict]) -> str:
    """Aligned text: the first column left, numbers right."""
    header = [title for _, title in COLUMNS]
    body = [[_cell(row[key]) for key, _ in COLUMNS] for row in table]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(COLUMNS))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])

    return "\n".join([line(header), *(line(cells) for cells in body)])
