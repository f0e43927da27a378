"""Synthetic prompts counted in tokens with a real `tokenizers` tokenizer (the optional extra)."""

from __future__ import annotations

import random

import pytest
import tokenizers  # in the dev extra, so CI always runs these

from loadgen.workloads import WORDS, LengthDist, Synthetic, TextMaker, Tokenizer


def word_level_tokenizer(directory) -> str:
    """A word-level tokenizer.json over WORDS, with `##`-style pieces so words can split."""
    vocab = {"[UNK]": 0}
    for word in WORDS:
        vocab.setdefault(word, len(vocab))
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer.decoder = tokenizers.decoders.WordPiece(prefix="##")
    path = directory / "tokenizer.json"
    tokenizer.save(str(path))
    return str(directory)


def test_synthetic_prompts_have_exact_token_lengths(tmp_path):
    tokenizer = Tokenizer(word_level_tokenizer(tmp_path))
    workload = Synthetic(
        LengthDist.parse("uniform:5:300"), None, TextMaker(tokenizer), random.Random(3),
        prefix_groups=0, prefix_len=0,
    )  # fmt: skip
    lengths = [tokenizer.count(workload.next().messages[0]["content"]) for _ in range(50)]
    expected = [LengthDist.parse("uniform:5:300").sample(random.Random(3)) for _ in range(1)]
    assert min(lengths) >= 5 and max(lengths) <= 300
    assert lengths[0] == expected[0]
    assert workload.describe()["length_source"] == "tokenizer"


def test_missing_tokenizer_file_is_a_clear_error(tmp_path):
    from loadgen.workloads import WorkloadError

    with pytest.raises(WorkloadError, match="tokenizer file not found"):
        Tokenizer(str(tmp_path / "nothing-here"))
