"""PromQL helpers the panel catalog builds its queries with, and the selectors of the template variables.

Every helper returns plain PromQL text with Grafana's variables left in place (`$host`, `$__rate_interval`);
whoever runs a query (Grafana, or the snapshot) substitutes them. Quantiles and ratios are guarded so an
idle stack answers with no series, never NaN.
"""

from __future__ import annotations

__all__ = [
    "ENGINE",
    "ENGINE_KIND",
    "GPU",
    "HOST",
    "RATE",
    "RUN",
    "TARGET",
    "TPOT_BOUNDS",
    "TTFT_BOUNDS",
    "VLLM",
    "mean",
    "quantile",
    "rate",
    "ratio",
    "within",
]

# Selectors built from the template variables.
GPU = 'instance=~"$host", gpu=~"$gpu"'
HOST = 'instance=~"$host"'
ENGINE = 'instance=~"$host", target=~"$target", model=~"$model"'
ENGINE_KIND = 'instance=~"$host", engine_kind=~"$engine_kind", target=~"$target", model=~"$model"'
TARGET = 'instance=~"$host", target=~"$target"'
# Warm-up requests (loadgen --warmup) are counted in series labelled phase="warmup": never in a panel.
RUN = 'run_id=~"$run", phase!="warmup"'
VLLM = 'model_name=~"$model"'
RATE = "$__rate_interval"

# Bucket boundaries of vLLM's TTFT and TPOT histograms: the SLO choices, so attainment is exact.
TTFT_BOUNDS = ["0.1", "0.25", "0.5", "0.75", "1.0", "2.5", "5.0", "7.5", "10.0"]
TPOT_BOUNDS = ["0.025", "0.05", "0.075", "0.1", "0.15", "0.2", "0.3"]


def rate(metric: str, selector: str, by: str = "") -> str:
    group = f" by ({by}) " if by else ""
    return f"sum{group}(rate({metric}{{{selector}}}[{RATE}]))"


def ratio(numerator: str, denominator: str) -> str:
    """numerator / denominator, absent (not NaN) while the denominator is 0."""
    return f"{numerator}\n/\n({denominator} > 0)"


def quantile(q: float, histogram: str, selector: str, by: str = "") -> str:
    """Quantile of a classic histogram, only while observations arrive (no NaN at idle)."""
    keep = f"{by}, le" if by else "le"
    on = f"on ({by})" if by else "on ()"
    return (
        f"histogram_quantile({q}, {rate(histogram + '_bucket', selector, keep)})\n"
        f"and {on} {rate(histogram + '_count', selector, by)} > 0"
    )


def mean(histogram: str, selector: str, by: str = "") -> str:
    return ratio(rate(histogram + "_sum", selector, by), rate(histogram + "_count", selector, by))


def within(histogram: str, selector: str, bound: str, by: str = "") -> str:
    """Share of observations at or below a bucket boundary (SLO attainment)."""
    bucket_selector = f'{selector}, le="{bound}"'
    return ratio(rate(histogram + "_bucket", bucket_selector, by), rate(histogram + "_count", selector, by))


def increase_buckets(histogram: str, selector: str) -> str:
    """Observations per bucket and interval: what a heatmap panel plots."""
    return f"sum by (le) (increase({histogram}_bucket{{{selector}}}[{RATE}]))"
