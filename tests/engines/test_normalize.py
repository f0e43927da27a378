"""What holds for every engine adapter: documented families, bounded labels, the common finish reasons."""

from __future__ import annotations

import pytest

from exporter.engines.registry import ENGINES
from exporter.engines.schema import FAMILIES, finish_reason
from tests.engines.normalizing import FIXTURES, LLAMA_PROPS, normalize


def test_every_point_uses_a_documented_family_and_bounded_labels() -> None:
    allowed = {"model", "engine_index", "reason", "raw_reason", "version"}
    outs = [
        normalize("llamacpp", "h100-qwen3-4b-shape-c50.txt", {"/props": LLAMA_PROPS}),
        normalize("sglang", "constructed-0.5.23-dp2-tp2.txt"),
        normalize("tgi", "constructed-full.txt", {"/info": {"model_id": "m"}}),
        normalize("lmdeploy", "constructed-0.18.txt"),
        normalize("triton_trtllm", "constructed-newer-backend.txt"),
    ]
    for out in outs:
        for item in [*out.points, *out.histograms]:
            assert item.family in FAMILIES
            assert set(item.labels) <= allowed, item


@pytest.mark.parametrize(
    ("raw", "common"),
    [("stop", "stop"), ("length", "length"), ("abort", "abort"), ("error", "error"), ("repetition", "other"),
     ("ResponseType.CANCEL", "abort"), ("ResponseType.OUT_OF_MEMORY", "error"), ("CANCELED", "abort"),
     ("ResponseType.FINISH", "completed"), ("ResponseType.SUCCESS", "completed"), ("success", "completed"),
     ("BACKEND", "other"), ("", "other")],
)  # fmt: skip
def test_finish_reason_mapping(raw: str, common: str) -> None:
    assert finish_reason(raw) == common


def test_every_engine_has_its_test_file_beside_its_fixtures_provenance() -> None:
    """exporter/README.md "Adding an engine": fixtures with a provenance row, and a test file of its own."""
    readme = (FIXTURES / "README.md").read_text()
    for kind in ENGINES:
        test_file = f"tests/engines/test_{kind}.py"
        assert (FIXTURES.parents[2] / test_file).is_file(), test_file
        rows = [line for line in readme.splitlines() if line.startswith(f"| `{kind}/")]
        assert any(f"`{test_file}`" in row for row in rows), f"no provenance row names {test_file}"
