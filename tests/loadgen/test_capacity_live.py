"""`llmobs-loadgen capacity` against running engines: a real llama.cpp server (its own log states the
bytes of its KV cache and of its weights), the exporter and Prometheus in front of it, and the simulator's
vLLM-shaped `cache_config_info`."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from loadgen.capacity.model import MIB
from loadgen.cli import main
from tests.simulator.conftest import simulator
from tests.support.llama import llama_server, tiny_model
from tests.support.procs import free_port, running
from tests.support.prometheus import prometheus_server, scrape_config
from tests.support.tiny_qwen3 import model_dir

MODELS = Path(__file__).resolve().parents[1] / "fixtures" / "models"
KV_LINE = re.compile(r"llama_kv_cache: size = +([0-9.]+) MiB \( *(\d+) cells, +(\d+) layers")
FILE_SIZE = re.compile(r"file size += ([0-9.]+) MiB")


def plan_json(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / f"plan-{len(list(tmp_path.glob('plan-*')))}.json"
    assert main(["capacity", *args, "--output-json", str(out)]) == 0
    return json.loads(out.read_text())


@pytest.mark.real
@pytest.mark.slow
def test_llamacpp_kv_bytes_weights_and_capacity(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = str(tiny_model())
    # -lv 4: llama.cpp logs its KV cache's and its weights' sizes at this verbosity
    with llama_server(tmp_path, parallel=1, ctx_size=2048, extra_args=["-lv", "4"]) as server:
        direct = plan_json(tmp_path, "--model", model, "--gpu-memory", "8GiB", "--engine-url", server.url)
        port = free_port()
        exporter = [sys.executable, "-m", "exporter", "--listen-address", f"127.0.0.1:{port}",
                    "--no-collector.gpu", "--target", f"llama={server.url},kind=llamacpp"]  # fmt: skip
        with running(exporter, f"http://127.0.0.1:{port}/healthz", tmp_path / "exporter.log"):
            exporter_url = f"http://127.0.0.1:{port}"
            via_exporter = plan_json(tmp_path, "--model", model, "--gpu-memory", "8GiB",
                                     "--exporter-url", exporter_url)  # fmt: skip
            config = scrape_config({"exporter": [f"127.0.0.1:{port}"]})
            with prometheus_server(tmp_path, config) as prometheus:
                prometheus.wait_for("llm_kv_cache_capacity_tokens")
                via_prometheus = plan_json(tmp_path, "--model", model, "--gpu-memory", "8GiB",
                                           "--prometheus-url", prometheus.url)  # fmt: skip
    log = (tmp_path / "llama-server.log").read_text(errors="replace")
    size_mib, cells, layers = KV_LINE.search(log).groups()
    # llama.cpp's own account of its cache: cells x our bytes per token (f16), to the 0.01 MiB it prints
    assert int(cells) == 2048 and int(layers) == direct["model"]["kv_layers"]
    assert direct["kv_bytes_per_token"] * int(cells) / MIB == pytest.approx(float(size_mib), abs=0.006)
    assert direct["weights_bytes"]["checkpoint"] / MIB == pytest.approx(
        float(FILE_SIZE.search(log).group(1)), abs=0.006
    )
    for plan in (direct, via_exporter, via_prometheus):
        assert plan["engine"]["capacity_tokens"] == 2048  # one slot below the trained 4096: the whole cache
        assert "sizes its cache by its context" in " ".join(plan["engine"]["explanation"])
    assert direct["engine"]["kind"] == "llamacpp" and via_exporter["engine"]["kind"] == "exporter"
    assert via_exporter["engine"]["engine_kind"] == via_prometheus["engine"]["engine_kind"] == "llamacpp"
    capsys.readouterr()


@pytest.mark.real
@pytest.mark.slow
def test_llamacpp_with_several_slots_says_what_props_cannot_tell(tmp_path: Path) -> None:
    with llama_server(tmp_path, parallel=2, ctx_size=1024) as server:
        plan = plan_json(
            tmp_path, "--model", str(tiny_model()), "--gpu-memory", "8GiB", "--engine-url", server.url
        )
    assert plan["engine"]["capacity_tokens"] is None
    assert "--kv-unified" in plan["engine"]["explanation"][0]


def test_vllm_shaped_engine_beside_the_plan(tmp_path: Path) -> None:
    """The simulator serves vLLM 0.33's cache_config_info; its RTX 4090D profile holds more blocks than a
    bf16 KV cache fits in 24 GiB (set from a measured run), and the explanation says what could cause it."""
    model = str(MODELS / "qwen3-4b-fp8")
    with simulator(tmp_path, "--profile", "rtx4090d-qwen3-4b-fp8") as url:
        plan = plan_json(tmp_path, "--model", model, "--gpu-memory", "23.99GiB", "--engine-url", url)
        # with an fp8 KV cache the engine's figure fits in memory, and the difference is the reserve
        fp8 = plan_json(
            tmp_path,
            "--model",
            model,
            "--gpu-memory",
            "23.99GiB",
            "--engine-url",
            url,
            "--kv-cache-dtype",
            "fp8",
        )
    engine = plan["engine"]
    assert engine["kind"] == "vllm"
    assert engine["capacity_tokens"] == 10_000 * 16 and engine["blocks"] == 10_000
    assert plan["settings"]["max_model_len"] == 40_960  # read from /v1/models
    assert plan["settings"]["gpu_memory_utilization"] == 0.9  # read from cache_config_info
    explanation = " ".join(engine["explanation"])
    assert "more than the" in explanation and "fp8 halves it" in explanation
    assert "kept" in " ".join(fp8["engine"]["explanation"])
    assert fp8["capacity_tokens"] > 160_000


def test_sweep_report_beside_the_memory_limit(tmp_path: Path) -> None:
    report = {
        "sweep": {"capacity": 64, "unit": "concurrent users", "first_failing": 128, "sentence": "..."},
        "phases": [
            {"phase": "c64", "requests": {"succeeded": 100}, "tokens": {"prompt": 25_600, "output": 10_000},
             "throughput": {"requests_per_s": 10.0}, "latency_s": {"e2e": {"mean": 6.4}},
             "slo": {"met": True, "objectives": ["user_tps>=10"]}},
            {"phase": "c128", "requests": {"succeeded": 100}, "tokens": {"prompt": 25_600, "output": 10_000},
             "throughput": {"requests_per_s": 11.0}, "latency_s": {"e2e": {"mean": 11.0}},
             "slo": {"met": False, "objectives": ["user_tps>=10"]}},
        ],
    }  # fmt: skip
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    plan = plan_json(
        tmp_path, "--model", str(MODELS / "qwen3-4b"), "--gpu-memory", "24GiB", "--report", str(path)
    )
    measured = " ".join(plan["measured"])
    assert "64 concurrent users" in measured
    assert "256 prompt + 100 output tokens" in measured
    assert "within the memory limit" in measured
    small = plan_json(tmp_path, "--model", str(MODELS / "qwen3-4b"), "--gpu-memory", "9GiB",
                      "--activation-reserve", "0.5GiB", "--report", str(path))  # fmt: skip
    assert "beyond the memory limit" in " ".join(small["measured"])


@pytest.mark.real
@pytest.mark.slow
def test_vllm_reports_the_blocks_the_plan_computes(live_vllm, tmp_path: Path) -> None:
    """The session's real vLLM (CPU) is given 1 GiB of KV space (VLLM_CPU_KVCACHE_SPACE) and then a block
    count by hand (--num-gpu-blocks-override 24): its log states the count it computed from the 1 GiB
    before the override, which the plan must reproduce; the override must be named as the reason the
    two differ."""
    plan = plan_json(
        tmp_path, "--model", str(model_dir()), "--engine-url", live_vllm.url, "--kv-cache-memory", "1GiB"
    )
    engine = plan["engine"]
    assert engine["kind"] == "vllm" and engine["block_size"] == 32  # the engine's block size, taken over
    assert engine["capacity_tokens"] == live_vllm.kv_capacity_tokens == 24 * 32
    assert plan["settings"]["max_model_len"] == 512  # from /v1/models
    assert plan["kv_bytes_per_token"] == 2 * 2 * 2 * 32 * 2  # 2 layers, 2 KV heads of 32, bf16: 512 bytes
    explanation = " ".join(engine["explanation"])
    assert "set by hand (num_gpu_blocks_override 24)" in explanation
    if live_vllm.log_path is not None:  # a server this session started: its own account
        computed = re.search(
            r"Overriding num_gpu_blocks=(\d+)", live_vllm.log_path.read_text(errors="replace")
        )
        assert computed, "vLLM logged no block count before its override"
        assert plan["blocks"] == int(computed.group(1))  # 1 GiB / (32 tokens x 512 bytes) = 65,536
