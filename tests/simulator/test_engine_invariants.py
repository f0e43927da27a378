"""The engine's bookkeeping, stepped synchronously through a random workload (shared prefixes, long
answers, aborts): KV blocks are never lost or double-counted, limits hold, every request finishes."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from simulator.engine import Engine, Sequence, Status
from simulator.profile import load_profile


def check(engine: Engine) -> None:
    pool = engine.pool
    holders: Counter[int] = Counter()
    plain = 0
    for seq in engine.running:
        assert seq.status is Status.RUNNING
        assert seq.num_blocks >= -(-seq.num_computed // engine.block_size)
        holders.update(seq.cached_refs)
        plain += seq.plain_blocks
    for seq in engine.waiting:
        assert seq.status is Status.WAITING and seq.num_blocks == 0 and seq.num_computed == 0
    assert {h: c for h, c in pool.refs.items() if c} == dict(holders)
    assert set(pool.evictable) == {h for h, c in pool.refs.items() if c == 0}
    assert pool.free_plain >= 0
    assert pool.free_plain + len(pool.refs) + plain == pool.num_blocks
    assert 0 <= pool.usage <= 1
    assert len(engine.running) <= engine.profile.scheduler.max_num_seqs


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bookkeeping_holds_through_a_random_workload(seed: int) -> None:
    rng = random.Random(seed)
    engine = Engine(load_profile("tiny"), seed=seed)
    prefixes = [[rng.randrange(1000) for _ in range(rng.choice([16, 40, 64]))] for _ in range(4)]
    sequences: list[Sequence] = []
    now = 0.0
    step = 0
    while step < 600 or any(seq.status is not Status.FINISHED for seq in sequences):
        step += 1
        assert step < 100_000, "the engine stopped making progress"
        if step < 600 and rng.random() < 0.2:
            prompt = rng.choice(prefixes) + [rng.randrange(1000) for _ in range(rng.randrange(1, 200))]
            sequences.append(
                engine.add(f"r{step}", prompt, rng.randrange(1, 300), ignore_eos=rng.random() < 0.5)
            )
        if sequences and rng.random() < 0.02:
            engine.abort(rng.choice(sequences))
        engine._process_aborts()
        batch, tokens = engine._schedule(now)
        assert tokens <= engine.profile.scheduler.max_num_batched_tokens
        now += 0.02
        engine._complete(batch, now)
        check(engine)
    assert len(sequences) > 80
    assert engine.pool.usage == 0
    stats = engine.stats
    assert sum(stats.request_success.values()) == len(sequences)
    assert stats.generation_tokens == sum(seq.output_len for seq in sequences)
    assert stats.preemptions > 0 and stats.prefix_cache_hits > 0  # the workload exercised both


def test_preempted_request_recomputes_and_finishes_with_every_token() -> None:
    engine = Engine(load_profile("tiny"))
    # 64 blocks of 16 tokens: three requests of 16 + 500 tokens cannot all fit.
    sequences = [engine.add(f"r{i}", [i] * 16, 500, ignore_eos=True) for i in range(3)]
    now = 0.0
    while any(seq.status is not Status.FINISHED for seq in sequences):
        engine._process_aborts()
        batch, _ = engine._schedule(now)
        now += 0.02
        engine._complete(batch, now)
        check(engine)
    assert [seq.output_len for seq in sequences] == [500, 500, 500]
    assert [seq.finish_reason for seq in sequences] == ["length"] * 3
    assert engine.stats.preemptions > 0
    assert sum(seq.num_preemptions for seq in sequences) == engine.stats.preemptions
