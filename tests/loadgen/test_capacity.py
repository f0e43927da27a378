"""The capacity planner against figures vLLM itself reported.

Anchors (issue 18, vLLM for Qwen3-4B): weights 7.55 GiB in bf16; 144 KiB of bf16 KV per token, so
1.37 GiB for 10,000 tokens and 5.62 GiB for 40,960.

Measured vLLM start-up logs the plan must reproduce:
- Qwen3-4B, fp16, RTX 2060 12 GB, vLLM 0.8 (V0), max_model_len 10000, max_num_seqs 1,
  gpu_memory_utilization 0.95: "Model loading took 7.5552 GiB", "total_gpu_memory (12.00GiB) x
  gpu_memory_utilization (0.95) = 11.40GiB; model weights take 7.56GiB; non_torch_memory takes 0.04GiB;
  PyTorch activation peak memory takes 0.74GiB; the rest of the memory reserved for KV Cache is 3.06GiB",
  "# cuda blocks: 1394", "Maximum concurrency for 10000 tokens per request: 2.23x" (a public README's
  copy of its log).
- vLLM V1 on an H100 (79.18 GiB), max_model_len 16000, gpu_memory_utilization 0.9, defaults otherwise
  (llm-d-benchmark config_explorer/empirical-vllm-memory-results.md): weights / activation peak /
  non-torch / KV cache in GiB: Llama-3.1-8B 14.99 / 4.76 / 0.13 / 51.38; Qwen3-0.6B 1.12 / 5.56 / 0.13 /
  64.45; Qwen3-32B 61.03 / 5.64 / 0.14 / 4.45.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from loadgen.capacity.errors import CapacityError
from loadgen.capacity.gpu import parse_size, read_nvml
from loadgen.capacity.hf_model import from_config
from loadgen.capacity.loader import load
from loadgen.capacity.model import GIB, KIB, MIB, SLIDING
from loadgen.capacity.plan import EngineSettings, Gpu, allocated_bytes, make_plan, weights_as_loaded
from loadgen.cli import main
from tests.exporter.fake_nvml import FakeGpu, FakeNvml

MODELS = Path(__file__).resolve().parents[1] / "fixtures" / "models"
H100 = Gpu(85_017_493_504, "NVML", "NVIDIA H100 80GB HBM3")  # 81,559 MiB less 480 MiB reserved = 79.18 GiB


def model(name: str, dtype: str = "auto"):
    return load(MODELS / name, dtype)


def test_qwen3_4b_anchors() -> None:
    spec = model("qwen3-4b")
    assert spec.parameters() == 4_022_468_096
    assert spec.weight_bytes() == 8_044_936_192  # the checkpoint's own total_size, computed the same
    loaded, _ = weights_as_loaded(spec)
    assert loaded / GIB == pytest.approx(7.5552, abs=0.0005)  # vLLM: "Model loading took 7.5552 GiB"
    assert f"{loaded / GIB:.2f}".startswith("7.5")
    per_token = spec.kv_bytes_per_token(2)
    assert per_token == 144 * KIB
    assert f"{10_000 * per_token / GIB:.2f}" == "1.37"
    assert f"{40_960 * per_token / GIB:.2f}" == "5.62"


def test_the_rtx_2060_start_up_log() -> None:
    plan = make_plan(
        model("qwen3-4b", "float16"),
        EngineSettings(
            max_model_len=10_000,
            gpu_memory_utilization=0.95,
            max_num_seqs=1,
            max_num_batched_tokens=10_000,
            non_torch_reserve=int(0.04 * GIB),
        ),
        Gpu(12 * GIB, "given"),
    )
    assert plan.budget / GIB == pytest.approx(11.40, abs=0.005)
    assert plan.activation / GIB == pytest.approx(0.74, abs=0.02)  # estimated from the forward pass
    assert plan.kv_memory / GIB == pytest.approx(3.06, abs=0.02)
    assert plan.blocks == pytest.approx(1394, rel=0.01)
    assert plan.sequences == pytest.approx(2.23, abs=0.02)


@pytest.mark.parametrize(
    ("name", "weights", "activation", "kv"),
    [
        ("llama-3.1-8b", 14.99, 4.76, 51.38),
        ("qwen3-0.6b", 1.12, 5.56, 64.45),
        ("qwen3-32b", 61.03, 5.64, 4.45),
    ],
)
def test_vllm_v1_on_an_h100(name: str, weights: float, activation: float, kv: float) -> None:
    plan = make_plan(model(name), EngineSettings(max_model_len=16_000), H100)
    assert plan.weights_loaded / GIB == pytest.approx(weights, abs=0.006)
    assert plan.activation / GIB == pytest.approx(activation, abs=0.13)  # a fitted estimate: say so
    assert "estimate" in plan.activation_detail
    assert plan.kv_memory / GIB == pytest.approx(kv, abs=0.15)


def test_allocator_rounding_follows_pytorchs_rules() -> None:
    assert allocated_bytes(1) == 512
    assert allocated_bytes(5 * MIB + 1) == 5 * MIB + 512  # split from a 20 MiB segment
    assert allocated_bytes(95 * MIB) == 96 * MIB  # 1 MiB left over: the block keeps it
    assert allocated_bytes(47.5 * MIB) == 48 * MIB
    assert allocated_bytes(int(92.5 * MIB)) == int(92.5 * MIB)  # 1.5 MiB left over (of 94): split


def test_moe_and_mla_shapes() -> None:
    moe = model("qwen3-30b-a3b")
    assert moe.parameters() / 1e9 == pytest.approx(30.5, abs=0.05)
    assert moe.kv_bytes_per_token(2) == 48 * 2 * 4 * 128 * 2
    deepseek = model("deepseek-v3")
    assert deepseek.parameters() / 1e9 == pytest.approx(671, rel=0.001)
    assert deepseek.kv_bytes_per_token(2) == 61 * (512 + 64) * 2  # one latent per token, no separate V
    assert deepseek.kv_bytes_per_token(2, tensor_parallel=8) == 61 * 576 * 2  # replicated, not sharded
    assert deepseek.rotary_rows == 4096 * 40  # YaRN: the cache covers the scaled context
    fp8 = deepseek.weight_bytes()
    assert 0.98 < fp8 / (deepseek.parameters() * 1.0) < 1.02  # about one byte per parameter


def test_fp8_checkpoint_from_config() -> None:
    config = json.loads((MODELS / "qwen3-4b" / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "fp8", "weight_block_size": [128, 128]}
    spec = from_config(config)
    # linear layers in one byte (plus a float32 scale per 128x128 block), embeddings in bf16
    assert 4.0 * GIB < spec.weight_bytes() < 4.5 * GIB


def test_kv_dtype_tensor_parallel_and_sliding_windows() -> None:
    spec = model("qwen3-4b")
    plan = make_plan(spec, EngineSettings(kv_cache_dtype="fp8"), Gpu(24 * GIB, "given"))
    assert plan.kv_bytes_per_token == 72 * KIB
    assert spec.kv_bytes_per_token(2, tensor_parallel=2) == 72 * KIB
    assert spec.kv_bytes_per_token(2, tensor_parallel=16) == 18 * KIB  # one KV head per GPU, replicated
    config = {
        "model_type": "gemma3_text",
        "hidden_size": 256,
        "num_hidden_layers": 12,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "head_dim": 64,
        "vocab_size": 1000,
        "sliding_window": 512,
        "sliding_window_pattern": 6,
        "max_position_embeddings": 8192,
    }
    gemma = from_config(config)
    assert gemma.kv_layers(SLIDING) == 10 and gemma.kv_layers("full") == 2
    per_layer = 2 * 64 * 2
    assert gemma.kv_bytes_per_sequence(8192, 2) == per_layer * (2 * 8192 + 10 * (512 + 16))
    listed = from_config({**config, "layer_types": ["sliding_attention", "full_attention"] * 6})
    assert listed.kv_layers(SLIDING) == 6
    plan = make_plan(gemma, EngineSettings(), Gpu(24 * GIB, "given"))
    assert any("sliding window" in note for note in plan.notes)


def test_bad_inputs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CapacityError, match="no such file"):
        load(tmp_path / "nothing")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CapacityError, match="not a readable JSON"):
        load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 64}))
    with pytest.raises(CapacityError, match="num_hidden_layers"):
        load(tmp_path)
    config = json.loads((MODELS / "qwen3-4b" / "config.json").read_text())
    unknown = {**config, "quantization_config": {"quant_method": "bitsandbytes_nf4x"}}
    with pytest.raises(CapacityError, match=r"safetensors\.index\.json"):
        from_config(unknown)
    assert from_config(unknown, checkpoint_bytes=3 * GIB).weight_bytes() == 3 * GIB
    with pytest.raises(CapacityError, match="unit"):
        parse_size("24")
    assert parse_size("24GiB") == 24 * GIB and parse_size("80GB") == 80 * 10**9
    with pytest.raises(CapacityError, match="between 0 and 1"):
        EngineSettings(gpu_memory_utilization=1.5)
    with pytest.raises(CapacityError, match="--gpu-memory"):
        make_plan(model("qwen3-4b"), EngineSettings(), None)


def test_a_gpu_too_small_says_so() -> None:
    plan = make_plan(model("qwen3-32b"), EngineSettings(), Gpu(24 * GIB, "given"))
    assert plan.blocks == 0 and any("refuses to start" in note for note in plan.notes)


def test_gpu_memory_through_nvml_excludes_the_driver_reserve() -> None:
    """NVML is faked (no GPU here) with the figures an H100 reported (tests/exporter/fake_nvml.py)."""
    gpu = read_nvml(0, FakeNvml([FakeGpu(uuid="GPU-1")]))
    assert gpu.memory / GIB == pytest.approx(79.18, abs=0.005)
    assert "H100" in gpu.source and "reserves" in gpu.source
    with pytest.raises(CapacityError, match="NVML GPU 3"):
        read_nvml(3, FakeNvml([FakeGpu(uuid="GPU-1")]))


def test_gguf_weights_and_kv(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    np = pytest.importorskip("numpy")
    path = tmp_path / "m.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(4096)
    writer.add_embedding_length(64)
    writer.add_block_count(2)
    writer.add_feed_forward_length(128)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_tensor("token_embd.weight", np.zeros((100, 64), dtype=np.float16))
    writer.add_tensor("blk.0.attn_k.weight", np.zeros((32, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    spec = load(path)
    assert spec.weight_bytes() == 100 * 64 * 2 + 32 * 64 * 4
    assert spec.kv_bytes_per_token(2) == 2 * 2 * 2 * 16 * 2  # f16 cache, llama.cpp's default
    assert spec.max_position == 4096


def test_the_command_prints_the_anchors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_json = tmp_path / "plan.json"
    code = main(
        [
            "capacity",
            "--model",
            str(MODELS / "qwen3-4b"),
            "--gpu-memory",
            "24GiB",
            "--tokens",
            "10000",
            "--output-json",
            str(out_json),
        ]
    )
    text = capsys.readouterr().out
    assert code == 0
    assert "7.5551 GiB as vLLM loads them" in text
    assert "144 KiB" in text and "1.37 GiB for 10,000 tokens" in text and "5.62 GiB for 40,960 tokens" in text
    plan = json.loads(out_json.read_text())
    assert plan["kv_bytes_per_token"] == 144 * KIB
    assert plan["capacity_tokens"] == plan["blocks"] * 16 > 40_960


def test_the_command_reports_configuration_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["capacity", "--model", str(tmp_path / "missing"), "--gpu-memory", "24GiB"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_kv_cache_memory_given_skips_the_budget() -> None:
    """vLLM's --kv-cache-memory (and VLLM_CPU_KVCACHE_SPACE on CPU): the KV cache's size is given."""
    plan = make_plan(model("qwen3-0.6b"), EngineSettings(kv_cache_memory=GIB), None)
    assert plan.budget is None and plan.kv_memory == GIB
    assert plan.blocks == GIB // (16 * plan.kv_bytes_per_token)


def test_gemma_ties_its_output_layer_when_the_config_leaves_it_out() -> None:
    # Gemma's config.json has no tie_word_embeddings; transformers' Gemma2Config defaults it to True.
    # Counted untied, the planner gave 10,159,209,984 parameters (a second 256,000 x 3,584 matrix).
    gemma = model("gemma-2-9b")
    assert gemma.tied_embeddings and gemma.parameters() == 9_241_705_984  # the model card's 9.24 B
    assert gemma.dtype == "bfloat16"  # a float32 checkpoint, served in the GPU's first dtype
    assert not model("mistral-7b-v0.1").tied_embeddings  # MistralConfig defaults it to False


def test_sliding_window_sequences_as_vllm_admits_them(capsys: pytest.CaptureFixture[str]) -> None:
    """vLLM 0.32 holds (and admits) a sliding-window layer's sequence by window - 1 + the tokens in
    flight (two batches of max_num_batched_tokens under async scheduling), whole blocks, plus one
    block; before, the window plus one block (Mistral 7B v0.1 on an H100: 104 sequences of 32,768
    tokens, where vLLM counts 22.6), and the per-length lines ignored the window (13.06)."""
    mistral = model("mistral-7b-v0.1")
    assert mistral.kv_layers(SLIDING) == 32 and mistral.sliding_window == 4096
    plan = make_plan(mistral, EngineSettings(), Gpu(int(79.18 * GIB), "given"))
    assert plan.in_flight_tokens == 2 * 8192
    blocks_per_sequence = -(-(4095 + 16_384) // 16) + 1  # cdiv(min(window - 1 + in flight, 32,768), 16) + 1
    assert plan.sequence_bytes(32_768) == blocks_per_sequence * plan.block_bytes
    assert plan.sequences == pytest.approx(plan.blocks / blocks_per_sequence)
    short = plan.sequence_bytes(1_000)  # shorter than the window: the sequence, in blocks, plus one
    assert short == (-(-1000 // 16) + 1) * plan.block_bytes
    assert main(["capacity", "--model", str(MODELS / "mistral-7b-v0.1"), "--gpu-memory", "79.18GiB"]) == 0
    out = capsys.readouterr().out
    per_length = re.search(r"for 32,768 tokens \(max_model_len.*?\); ([\d.]+) such sequences fit", out)
    concurrency = re.search(r"Concurrency +([\d.]+) sequences", out)
    assert (
        per_length and concurrency and per_length.group(1) == concurrency.group(1) == f"{plan.sequences:.2f}"
    )


def test_a_gpu_size_in_decimal_units_says_what_gpus_are_sold_as(capsys: pytest.CaptureFixture[str]) -> None:
    # "80GB" is 74.51 GiB; an H100 80GB has 80 GiB (79.18 for vLLM): Qwen3-32B's plan went from a KV
    # cache of about 4 GiB to 0.3 GiB and "vLLM refuses to start" without a word about the unit
    assert main(["capacity", "--model", str(MODELS / "qwen3-32b"), "--gpu-memory", "80GB"]) == 0
    out = capsys.readouterr().out
    assert "74.51 GiB (given in decimal units; a GPU sold as 80GB has 80 GiB: --gpu-memory 80GiB)" in out
    assert main(["capacity", "--model", str(MODELS / "qwen3-32b"), "--gpu-memory", "79.18GiB"]) == 0
    assert "79.18 GiB (given) x 0.9" in capsys.readouterr().out
