"""The faithfulness proof: the simulator's /metrics has exactly the families of a real vLLM 0.33 server.

tests/fixtures/engines/vllm/v0.33.0-*.txt were rendered by vLLM 0.33.0's own PrometheusStatLogger
(tools/fixtures/render_vllm.py). Compared here: every family's name, type, HELP text, label names,
the values of enumerated labels, histogram bucket bounds (those not tied to max_model_len) and the
order families appear in. Sample values differ by design.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "engines" / "vllm"
ENUMERATED = ("finished_reason", "reason", "source", "sleep_state", "position")
TOKEN_COUNT_HISTOGRAMS = {  # 1-2-5 buckets up to max_model_len, which differs between the two servers
    "vllm:request_prompt_tokens",
    "vllm:request_generation_tokens",
    "vllm:request_max_num_generation_tokens",
    "vllm:request_params_max_tokens",
    "vllm:request_prefill_kv_computed_tokens",
}


def families(text: str) -> dict[str, dict]:
    result = {}
    for family in text_string_to_metric_families(text):
        labels = set().union(*(sample.labels for sample in family.samples)) if family.samples else set()
        result[family.name] = {
            "type": family.type,
            "help": family.documentation,
            "labels": labels - {"le"},
            "values": {
                name: {s.labels[name] for s in family.samples if name in s.labels} for name in ENUMERATED
            },
            "le": sorted({s.labels["le"] for s in family.samples if "le" in s.labels}, key=float),
            "engines": sorted({s.labels["engine"] for s in family.samples if "engine" in s.labels}),
        }
    return result


@pytest.mark.parametrize(
    ("fixture", "engines", "flags"),
    [
        ("v0.33.0-idle.txt", 1, ()),
        ("v0.33.0-load.txt", 1, ()),
        ("v0.33.0-dp2-load.txt", 2, ()),
        ("v0.33.0-spec3-load.txt", 1, ("--speculative-tokens", "3")),  # vLLM with 3-token EAGLE/MTP
    ],
)
def test_same_families_as_real_vllm_033(start_simulator, fixture: str, engines: int, flags: tuple) -> None:
    real = families((FIXTURES / fixture).read_text())
    url = start_simulator("--profile", "tiny", "--data-parallel-size", str(engines), *flags)
    httpx.post(f"{url}/v1/completions", json={"prompt": "hello", "max_tokens": 3}, timeout=10)
    ours = families(httpx.get(f"{url}/metrics", timeout=5).text)
    # The fixtures come from vLLM's stat logger alone; the API server's http_* families (which the
    # simulator serves too) are diffed against a live vLLM in test_fidelity_live_vllm.py.
    ours = {name: family for name, family in ours.items() if not name.startswith("http_")}

    assert list(ours) == list(real)  # same families, in the same order
    for name, family in real.items():
        mine = ours[name]
        assert (mine["type"], mine["help"], mine["labels"]) == (
            family["type"],
            family["help"],
            family["labels"],
        ), name
        assert mine["values"] == family["values"], name
        assert mine["engines"] == family["engines"], name
        if family["type"] == "histogram" and name not in TOKEN_COUNT_HISTOGRAMS:
            assert mine["le"] == family["le"], name


def test_cache_config_info_has_the_real_label_set(start_simulator) -> None:
    real = families((FIXTURES / "v0.33.0-load.txt").read_text())["vllm:cache_config_info"]
    url = start_simulator("--profile", "tiny")
    ours = families(httpx.get(f"{url}/metrics", timeout=5).text)["vllm:cache_config_info"]
    assert ours["labels"] == real["labels"]
    assert len(real["labels"]) >= 35
