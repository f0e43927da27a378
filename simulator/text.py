"""A stand-in tokenizer and deterministic pseudo-words for generated text.

The simulator has no real vocabulary. Prompt text is cut into word and punctuation pieces (long
words into pieces of at most 6 characters), which lands near a BPE tokenizer's count for English
text; each piece gets a stable id, so equal prefixes give equal block hashes (prefix caching).
"""

from __future__ import annotations

import json
import random
import re
import zlib

_PIECE = re.compile(r"\w{1,6}|[^\w\s]")
# Chat-template overhead per message, like Qwen's "<|im_start|>role\n ... <|im_end|>\n": a role marker
# and three more tokens. The generation prompt is the assistant's message header, as in Qwen's template,
# so the next turn of a conversation (which carries the answer as an assistant message) starts with
# the previous request's prompt and answer, token for token: the prefix cache sees the history.
MESSAGE_OVERHEAD_TOKENS = 4

_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "da", "pe", "ri", "mo", "zu", "fa", "ge", "hu"]


def _make_words(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words = set()
    while len(words) < count:
        words.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3))))
    return sorted(words)


WORDS: list[str] = _make_words(512, seed=0x5EED)
# The JSON-escaped bytes of " word", ready to splice into SSE chunks.
WORD_PIECES: list[bytes] = [json.dumps(" " + word)[1:-1].encode() for word in WORDS]
# The token id of each pseudo-word as token_ids() reads it back (every word is one piece of <= 6 letters).
WORD_IDS: list[int] = [zlib.crc32(word.encode()) for word in WORDS]


def token_ids(text: str) -> list[int]:
    return [zlib.crc32(piece.encode()) for piece in _PIECE.findall(text)]


def chat_token_ids(messages: list[tuple[str, str]]) -> list[int]:
    """Token ids of a rendered chat: role marker, content and template overhead per message, then the
    generation prompt (the header of the assistant's message)."""
    ids: list[int] = []
    for role, content in messages:
        ids.extend(_header(role))
        ids.extend(token_ids(content))
    ids.extend(_header("assistant"))
    return ids


def _header(role: str) -> list[int]:
    return [zlib.crc32(f"<|{role}|>".encode()), *[0] * (MESSAGE_OVERHEAD_TOKENS - 1)]


def output_token_id(request_seed: int, position: int) -> int:
    """The token id of output token number `position`, as the prompt of a later turn reads it back."""
    return WORD_IDS[word_index(request_seed, position)]


def word_index(request_seed: int, position: int) -> int:
    """Which pseudo-word is output token number `position` of a request (deterministic)."""
    mixed = (request_seed * 0x9E3779B1 + position * 0x85EBCA77) & 0xFFFFFFFF
    mixed ^= mixed >> 15
    return (mixed * 0x2C1B3C6D & 0xFFFFFFFF) % len(WORDS)


def generated_text(request_seed: int, start: int, stop: int) -> str:
    return "".join(" " + WORDS[word_index(request_seed, position)] for position in range(start, stop))
