"""The template variables and annotations the dashboards share."""

from __future__ import annotations

from grafana.model import Annotation, CustomVariable, QueryVariable
from grafana.promql import TPOT_BOUNDS, TTFT_BOUNDS

HOST = QueryVariable("host", "Host (exporter)", "label_values(exporter_build_info, instance)")
GPU = QueryVariable("gpu", "GPU", 'label_values(gpu_info{instance=~"$host"}, gpu)')
# llm_target_* health series carry the target only; llm_target_info{target, engine_kind} names its kind.
ENGINE_KIND = QueryVariable(
    "engine_kind", "Engine kind", 'label_values(llm_target_info{instance=~"$host"}, engine_kind)'
)
TARGET = QueryVariable("target", "Engine target", 'label_values(llm_target_info{instance=~"$host"}, target)')
KIND_TARGET = QueryVariable(
    "target",
    "Engine target",
    'label_values(llm_target_info{instance=~"$host", engine_kind=~"$engine_kind"}, target)',
)
MODEL = QueryVariable("model", "Model", 'label_values(llm_engine_info{target=~"$target"}, model)')
SCENARIO = QueryVariable("scenario", "Scenario", "label_values(loadgen_run_info, scenario)")
RUN = QueryVariable("run", "Load-test run", 'label_values(loadgen_run_info{scenario=~"$scenario"}, run_id)')
TTFT_SLO = CustomVariable(
    "ttft_slo",
    "TTFT SLO (s)",
    tuple(TTFT_BOUNDS),
    "1.0",
    "TTFT objective; a bucket boundary of vLLM's TTFT histogram.",
)
TPOT_SLO = CustomVariable(
    "tpot_slo",
    "TPOT SLO (s)",
    tuple(TPOT_BOUNDS),
    "0.1",
    "Time per output token objective (0.1 s = 10 tokens/s).",
)

PHASES = Annotation(
    "Load-test phases",
    'loadgen_phase_info{run_id=~"$run"}',
    title_format="{{phase}}",
    tag_keys="scenario,run_id",
)
