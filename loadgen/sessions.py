"""Agentic sessions: conversations whose turns carry the whole history (think time between turns is
think.py's), with a shared system prompt sized so the engine's prefix cache hits a target share of
prompt tokens.

What an engine with prefix caching (vLLM V1, SGLang) can reuse in turn k of a conversation is the
shared system prompt and everything the conversation said before it, its answers included (vLLM hashes
a request's blocks as they fill, output too, and a chat template's generation prompt is the assistant's
header, so turn k starts with turn k-1's prompt and answer, token for token):

    hit(k) = S + (k - 1)(U + A) - B          query(k) = S + (k - 1)(U + A) + N

with S the system prompt, U a user message and A an answer, each with its template header (H tokens),
N = U + H the new user message and the generation prompt, and B the tokens a block cache cannot hit:
blocks are cached whole (16 tokens in vLLM) and the last token of an answer is never computed, so about
half a block per request. Over T turns the hit share is sum(hit) / sum(query); `system_prompt_tokens`
solves it for S. What the engine really hit is read from its own counters (engine_counters.py) and
reported beside the target: the first request of a system prompt misses it, and a cache too small for
the sessions in flight evicts history; that shows there.
"""

from __future__ import annotations

from loadgen.errors import ScenarioError, WorkloadError

__all__ = ["MESSAGE_TOKENS", "history_hit_rate", "system_prompt_tokens"]

# Chat-template tokens around one message (Qwen's `<|im_start|>user\n` ... `<|im_end|>\n` is 5; the
# simulator's 4). The generation prompt is the assistant's header, as long.
MESSAGE_TOKENS = 4
BLOCK_TOKENS = 16  # vLLM's default KV block; about half of one per request is never a hit


def history_hit_rate(system: float, user: float, answer: float, turns: int) -> float:
    """The share of prompt tokens a block prefix cache hits over one conversation, with a shared system
    prompt of `system` content tokens, `user`-token questions and `answer`-token answers."""
    head, new = system + MESSAGE_TOKENS, user + 2 * MESSAGE_TOKENS
    step = user + answer + 2 * MESSAGE_TOKENS
    history = turns * head + step * turns * (turns - 1) / 2
    hits = max(0.0, history - turns * BLOCK_TOKENS / 2)
    return hits / (history + turns * new)


def system_prompt_tokens(rate: float, user: float, answer: float, turns: int) -> int:
    """The shared system prompt (content tokens) that makes the prefix-cache hit share `rate` for
    conversations of `turns` turns of `user`-token questions and `answer`-token answers."""
    if not 0 < rate < 1:
        raise ScenarioError(f"prefix_hit_rate must be between 0 and 1 (exclusive), got {rate!r}")
    new, step = user + 2 * MESSAGE_TOKENS, user + answer + 2 * MESSAGE_TOKENS
    # rate = (T(S+H) + step T(T-1)/2 - T B/2) / (T(S+H) + step T(T-1)/2 + T new), solved for S
    head = (rate * new + BLOCK_TOKENS / 2) / (1 - rate) - step * (turns - 1) / 2
    system = round(head - MESSAGE_TOKENS)
    if system < 1:
        floor = history_hit_rate(1, user, answer, turns)
        raise WorkloadError(
            f"--prefix-hit-rate {rate:g} is below what the history alone gives ({floor:.0%} with "
            f"{turns} turns of {user:g}-token questions and {answer:g}-token answers): lower --turns, "
            "raise --input-len or shorten --output-len"
        )
    return system
