"""Load-test runs: the load generator's client-side view of each run."""

from __future__ import annotations

from grafana import variables as var
from grafana.catalog.names import CLIENT_TPOT, CLIENT_TTFO, CLIENT_TTFT, COMPLETED, FAILED
from grafana.model import (
    ATTAINMENT,
    Dashboard,
    heatmap,
    q,
    row,
    stat,
    table,
    thresholds,
    timeline,
    timeseries,
)
from grafana.promql import RUN, increase_buckets, mean, quantile, rate, ratio


def load_tests() -> Dashboard:
    R = RUN
    by = "run_id"
    lg = "{{run_id}}"
    histograms = [
        ("Time to first token", CLIENT_TTFT),
        ("Time to first output token", CLIENT_TTFO),
        ("Time per output token (per request)", CLIENT_TPOT),
        ("Inter-token latency", "loadgen_inter_token_latency_seconds"),
        ("End-to-end latency", "loadgen_e2e_request_latency_seconds"),
        ("Dispatch delay", "loadgen_dispatch_delay_seconds"),
    ]
    latency_panels = [
        timeseries(
            title,
            f"p50/p90/p95/p99 and mean of {metric} (client side).",
            [
                q(quantile(0.5, metric, R, by), f"{lg} p50"),
                q(quantile(0.9, metric, R, by), f"{lg} p90"),
                q(quantile(0.95, metric, R, by), f"{lg} p95"),
                q(quantile(0.99, metric, R, by), f"{lg} p99"),
                q(mean(metric, R, by), f"{lg} mean"),
            ],
            "s",
            width=8,
        )
        for title, metric in histograms
    ]
    ttft_ok = f'{R}, le="$ttft_slo"'
    tpot_ok = f'{R}, le="$tpot_slo"'
    both_ok = f'{R}, ttft_le="$ttft_slo", tpot_le="$tpot_slo"'
    panels = [
        row("Runs"),
        table(
            "Runs",
            "loadgen_run_info: model, endpoint kind and load shape of each run (one row for all its shards).",
            q(
                "max by (scenario, run_id, model, endpoint_kind, shape) "
                f'(loadgen_run_info{{scenario=~"$scenario", {R}}})'
            ),
            width=12,
            height=5,
        ),
        table(
            "Current phase",
            "loadgen_phase_info: the phase each run is in now (shards of a run: each phase they are in).",
            q(f"max by (scenario, run_id, phase) (loadgen_phase_info{{{R}}})"),
            width=12,
            height=5,
        ),
        stat(
            "Requests sent",
            "Requests sent over the time range.",
            q(f"sum(increase(loadgen_requests_sent_total{{{R}}}[$__range]))"),
            width=6,
        ),
        stat(
            "Success ratio",
            "Successful / completed requests over the time range.",
            q(
                ratio(
                    f'sum(increase(loadgen_requests_total{{{R}, outcome="success"}}[$__range]))',
                    f'sum(increase(loadgen_requests_total{{{R}, outcome!="cancelled"}}[$__range]))',
                )
            ),
            "percentunit",
            width=6,
            thresholds=thresholds((None, "red"), (0.99, "orange"), (0.999, "green")),
        ),
        stat(
            "TTFT SLO attainment",
            "Share of requests with TTFT <= $ttft_slo s over the time range.",
            q(
                ratio(
                    f"sum(increase({CLIENT_TTFT}_bucket{{{ttft_ok}}}[$__range]))",
                    f"sum(increase({CLIENT_TTFT}_count{{{R}}}[$__range]))",
                )
            ),
            "percentunit",
            width=6,
            thresholds=ATTAINMENT,
        ),
        stat(
            "TPOT SLO attainment",
            "Share of requests with TPOT <= $tpot_slo s over the time range.",
            q(
                ratio(
                    f"sum(increase({CLIENT_TPOT}_bucket{{{tpot_ok}}}[$__range]))",
                    f"sum(increase({CLIENT_TPOT}_count{{{R}}}[$__range]))",
                )
            ),
            "percentunit",
            width=6,
            thresholds=ATTAINMENT,
        ),
        timeline(
            "Phases",
            "The phase each run was in (steps of a ramp or sweep).",
            [
                q(f"max by (run_id, phase) (loadgen_phase_info{{{R}}})", "{{run_id}} {{phase}}"),
            ],
            width=24,
            height=5,
        ),
        row("Load"),
        timeseries(
            "Offered and achieved",
            "Requests sent per second, the schedule's target rate, and completions by outcome.",
            [
                q(rate("loadgen_requests_sent_total", R, by), f"{lg} sent"),
                q(f"sum by ({by}) (loadgen_target_request_rate{{{R}}})", f"{lg} target rate"),
                q(rate("loadgen_requests_total", R, f"{by}, outcome"), f"{lg} {{{{outcome}}}}"),
            ],
            "reqps",
        ),
        timeseries(
            "Concurrency",
            "Target concurrency of the schedule and requests in flight.",
            [
                q(f"sum by ({by}) (loadgen_target_concurrency{{{R}}})", f"{lg} target"),
                q(f"sum by ({by}) (loadgen_requests_in_flight{{{R}}})", f"{lg} in flight"),
            ],
        ),
        row("Latency percentiles (client side)"),
        *latency_panels,
        heatmap("TTFT distribution", "Client TTFT per interval.", increase_buckets(CLIENT_TTFT, R), width=12),
        heatmap(
            "TPOT distribution",
            "Client time per output token per interval.",
            increase_buckets(CLIENT_TPOT, R),
            width=12,
        ),
        row("Errors, throughput and goodput"),
        timeseries(
            "Error ratio",
            "Failed / completed requests (cancelled excluded) per interval.",
            [
                q(
                    ratio(
                        f"({rate('loadgen_requests_total', FAILED, by)}\n"
                        f"or {rate('loadgen_requests_total', COMPLETED, by)} * 0)",
                        rate("loadgen_requests_total", COMPLETED, by),
                    ),
                    lg,
                ),
            ],
            "percentunit",
            width=8,
        ),
        timeseries(
            "Tokens per second",
            "Prompt, output and reasoning tokens per second.",
            [
                q(rate("loadgen_prompt_tokens_total", R, by), f"{lg} prompt"),
                q(rate("loadgen_output_tokens_total", R, by), f"{lg} output"),
                q(rate("loadgen_reasoning_tokens_total", R, by), f"{lg} reasoning"),
            ],
            "short",
            width=8,
        ),
        timeseries(
            "Tokens per event",
            "Output tokens per streamed token event, and the share of events the server said carried more "
            "than one token (speculative decoding, multi-token prediction, a stream interval). Above 1 "
            "with no multi-token share: the server did not say which events (--continuous-usage asks).",
            [
                q(
                    ratio(
                        rate("loadgen_output_tokens_total", R, by),
                        rate("loadgen_token_events_total", R, by),
                    ),
                    f"{lg} tokens per event",
                ),
                q(
                    ratio(
                        rate("loadgen_multi_token_events_total", R, by),
                        rate("loadgen_token_events_total", R, by),
                    ),
                    f"{lg} multi-token share",
                ),
            ],
            "short",
            width=8,
        ),
        timeseries(
            "Thinking time (reasoning models)",
            "Mean time to the first answer token minus mean time to the first token of any kind: how "
            "long a reasoning model thinks before it answers (0 for models that do not reason).",
            [q(f"{mean(CLIENT_TTFO, R, by)}\n- {mean(CLIENT_TTFT, R, by)}", f"{lg} TTFO - TTFT (mean)")],
            "s",
            width=8,
        ),
        timeseries(
            "Goodput",
            "Successful requests per second meeting both the TTFT and the TPOT objective "
            "(loadgen_requests_slo_met_total, counted per request by the load generator), beside those "
            "meeting each objective alone and all successes. One-token answers meet any TPOT objective; "
            "requests that were not streamed have no TTFT and meet none.",
            [
                q(rate("loadgen_requests_slo_met_total", both_ok, by), f"{lg} both objectives"),
                q(rate(f"{CLIENT_TTFT}_bucket", ttft_ok, by), f"{lg} TTFT <= $ttft_slo s"),
                q(rate(f"{CLIENT_TPOT}_bucket", tpot_ok, by), f"{lg} TPOT <= $tpot_slo s"),
                q(rate("loadgen_requests_total", f'{R}, outcome="success"', by), f"{lg} all successes"),
            ],
            "reqps",
            width=8,
        ),
    ]
    return Dashboard(
        "load-tests",
        "llmobs-load-tests",
        "LLM serving: load-test runs",
        "Client-side view of load-generator runs: phases, percentiles, errors and goodput.",
        (var.SCENARIO, var.RUN, var.TTFT_SLO, var.TPOT_SLO),
        tuple(panels),
        (var.PHASES,),
    )
