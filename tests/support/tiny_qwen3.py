"""A tiny Qwen3-shaped model directory for real engines that run on CPU (vLLM, `transformers serve`).

No model can be downloaded here, so the directory is written locally: `config.json` (Qwen3, hidden 128,
2 layers, 4 heads, 2 KV heads, head_dim 32, vocabulary 1024), `generation_config.json`, and a
byte-level BPE tokenizer trained with the `tokenizers` library on the load generator's word list, with a
`tokenizer_config.json` whose chat template is Qwen's ChatML. vLLM serves it with `--load-format dummy`
(random weights); `transformers serve` needs weights on disk, which `with_weights()` writes with the
engine's own Python (transformers' `from_config(...).save_pretrained`).

The output is random text, but the tokenizer is a real one: prompt token counts are exact, and an
engine's `usage` and its counters can be compared token for token. `<|im_end|>` is the EOS token, so a
random model sometimes stops on its own (finished reason `stop`); ask for `stop_token_ids` to force it.

API::

    model_dir()                      # the directory (written once, cached under $LLMOBS_CACHE/models/)
    with_weights(python)             # the same plus model.safetensors, written by `python` (the engine's)
    MODEL_NAME                       # the name engines serve it under
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from tests.support.llama import cache_dir

MODEL_NAME = "tiny-qwen3"
VOCAB_SIZE = 1024
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CONFIG = {
    "architectures": ["Qwen3ForCausalLM"],
    "model_type": "qwen3",
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "vocab_size": VOCAB_SIZE,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "hidden_act": "silu",
    "attention_bias": False,
    "attention_dropout": 0.0,
    "use_cache": True,
    "bos_token_id": 0,
    "eos_token_id": 2,
}
# Qwen's ChatML template, without tools: what a real Qwen3 tokenizer_config.json carries, trimmed.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] "
    "+ '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% endif %}"
)
VERSION = 1  # part of the directory name: bump it when anything above changes


def model_dir() -> Path:
    target = cache_dir() / "models" / f"{MODEL_NAME}-v{VERSION}"
    if not (target / "tokenizer.json").is_file():
        partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        _write(partial)
        shutil.rmtree(target, ignore_errors=True)
        partial.replace(target)
    return target


def with_weights(python: Path) -> Path:
    """The model directory with random weights on disk (transformers serve loads them; vLLM needs none)."""
    target = cache_dir() / "models" / f"{MODEL_NAME}-v{VERSION}-weights"
    if not (target / "model.safetensors").is_file():
        partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(model_dir(), partial)
        script = (
            "import sys, torch, transformers\n"
            "torch.manual_seed(0)\n"
            "config = transformers.AutoConfig.from_pretrained(sys.argv[1])\n"
            "model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)\n"
            "model.save_pretrained(sys.argv[1])\n"
        )
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        subprocess.run([str(python), "-c", script, str(partial)], check=True, env=env, capture_output=True)
        shutil.rmtree(target, ignore_errors=True)
        partial.replace(target)
    return target


def _write(directory: Path) -> None:
    (directory / "config.json").write_text(json.dumps(CONFIG, indent=2))
    generation = {"bos_token_id": 0, "eos_token_id": 2, "do_sample": True, "temperature": 1.0}
    (directory / "generation_config.json").write_text(json.dumps(generation, indent=2))
    _train_tokenizer().save(str(directory / "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "model_max_length": CONFIG["max_position_embeddings"],
        "chat_template": CHAT_TEMPLATE,
        "add_bos_token": False,
        "clean_up_tokenization_spaces": False,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))


def _train_tokenizer():
    """Byte-level BPE (any text encodes), trained on the load generator's words: deterministic."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from loadgen.workloads import WORDS

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(0, len(WORDS), 8)]
    corpus += ["user assistant system\n", "The quick brown fox jumps over the lazy dog."]
    tokenizer.train_from_iterator(corpus, trainer)
    return tokenizer
