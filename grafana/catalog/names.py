"""Metric names and selectors more than one dashboard reads."""

from __future__ import annotations

from grafana.promql import RUN

SLOWDOWNS = (
    'reason=~"sw_thermal_slowdown|hw_thermal_slowdown|hw_slowdown|hw_power_brake_slowdown|sw_power_cap"'
)
CLIENT_TTFT = "loadgen_time_to_first_token_seconds"
SERVER_TTFT = "llm_time_to_first_token_seconds"
CLIENT_TPOT = "loadgen_time_per_output_token_seconds"
SERVER_TPOT = "llm_time_per_output_token_seconds"
FAILED = f'{RUN}, outcome!~"success|cancelled"'
COMPLETED = f'{RUN}, outcome!="cancelled"'
