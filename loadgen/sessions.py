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

__all__ = ["BLOCK_TOKENS", "MESSAGE_TOKENS", "history_hit_rate", "system_prompt_tokens"]

# Chat-template tokens around one message (Qwen's `<|im_start|>user\n` ... `<|im_end|>\n` is 5; the
# simulator's 4). The generation prompt is the assistant's header, as long.
MESSAGE_TOKENS = 4
BLOCK_TOKENS = 16  # vLLM's default KV block (the engine's own, from vllm:cache_config_info, when it says)


def history_hit_rate(
    system: float,
    user: float,
    answer: float,
    turns: int,
    block_tokens: int = BLOCK_TOKENS,
    message_tokens: float = MESSAGE_TOKENS,
) -> float:
    """The share of prompt tokens a block prefix cache hits over one conversation, with a shared system
    prompt of `system` content tokens, `user`-token questions and `answer`-token answers."""
    head, new = system + message_tokens, user + 2 * message_tokens
    step = user + answer + 2 * message_tokens
    history = turns * head + step * turns * (turns - 1) / 2
    hits = max(0.0, history - turns * block_tokens / 2)
    return hits / (history + turns * new)


def system_prompt_tokens(
    rate: float,
    user: float,
    answer: float,
    turns: int,
    block_tokens: int = BLOCK_TOKENS,
    message_tokens: float = MESSAGE_TOKENS,
) -> int:
    """The shared system prompt (content tokens) that makes the prefix-cache hit share `rate` for
    conversations of `turns` turns of `user`-token questions and `answer`-token answers.

    The first turn hits the system prompt's full blocks only, so its length (with its header) is put
    in the middle of a block: then it loses half a block, as later turns do on average, and a token
    count off by less than half a block does not change its hits."""
    if not 0 < rate < 1:
        raise ScenarioError(f"prefix_hit_rate must be between 0 and 1 (exclusive), got {rate!r}")
    new, step = user + 2 * message_tokens, user + answer + 2 * message_tokens
    # rate = (T(S+H) + step T(T-1)/2 - T B/2) / (T(S+H) + step T(T-1)/2 + T new), solved for S+H
    head = (rate * new + block_tokens / 2) / (1 - rate) - step * (turns - 1) / 2
    if head - message_tokens < 1:
        floor = history_hit_rate(1, user, answer, turns, block_tokens, message_tokens)
        raise WorkloadError(
            f"--prefix-hit-rate {rate:g} is below what the history alone gives ({floor:.0%} with "
            f"{turns} turns of {user:g}-token questions and {answer:g}-token answers): lower --turns, "
            "raise --input-len or shorten --output-len"
        )
    head = (max(0, round(head / block_tokens - 0.5)) + 0.5) * block_tokens
    return max(1, round(head - message_tokens))
