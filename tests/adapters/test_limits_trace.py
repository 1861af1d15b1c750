"""One request trace, the same answers from ``memory://`` and ``fusedb://``.

For each strategy of limits 5.8.0 (fixed window, moving window, sliding window
counter), sync and ``limits.aio``, a seeded trace of hits (costs 1..3, three
ids, two limits), tests, window statistics and clears, with time advancing
across window edges, runs against limits' own MemoryStorage and against
FuseDBStorage; every answer must be equal, floats exactly. One fake clock
drives both: ``time.time`` (limits' strategies and memory storage, and
fusedb.limits, read it) and the database's ``clock=``. Times are multiples of
1/8 s, so sums of times and periods are exact in binary floating point.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from limits import RateLimitItemPerSecond, aio, strategies
from limits.aio.storage import MemoryStorage as AsyncMemoryStorage
from limits.storage import MemoryStorage

import fusedb
from fusedb.limits import AsyncFuseDBStorage, FuseDBStorage
from fusedb.testing import FakeClock

STRATEGIES = ["fixed-window", "moving-window", "sliding-window-counter"]
ITEMS = [RateLimitItemPerSecond(4, 2), RateLimitItemPerSecond(7, 5)]
IDS = ["alice", "bob", "carol"]
STEPS = 400


def trace(seed: int) -> list[tuple]:
    """A list of (operation, arguments): hit/test (item, id, cost), stats and
    clear (item, id), advance (seconds)."""
    rnd = random.Random(seed)
    steps = []
    for _ in range(STEPS):
        r = rnd.random()
        item, who = rnd.randrange(len(ITEMS)), rnd.choice(IDS)
        if r < 0.55:
            steps.append(("hit", item, who, rnd.choice((1, 1, 1, 2, 3))))
        elif r < 0.65:
            steps.append(("test", item, who, rnd.choice((1, 2, 3))))
        elif r < 0.8:
            steps.append(("stats", item, who))
        elif r < 0.83:
            steps.append(("clear", item, who))
        else:
            steps.append(("advance", rnd.choice((0.125, 0.25, 0.5, 1.0, 1.625, 3.0))))
    return steps


def settle_memory(storage) -> None:
    """Run memory://'s expiry sweep now, as its 10 ms timer does in real time.

    Its moving-window statistics depend on whether that sweep ran since time
    moved (a window with no recent entries reports the oldest entry it still
    holds); under a fake clock the timer's real-time firing is a race, so the
    trace runs the sweep itself after each advance."""
    storage.timer.join()
    storage._MemoryStorage__expire_events()


async def settle_memory_async(storage) -> None:
    if storage.timer is not None:
        await storage.timer
    await storage._MemoryStorage__expire_events()


def run_sync(limiter, steps, clock, settle) -> list:
    out = []
    for step in steps:
        op, args = step[0], step[1:]
        if op == "advance":
            clock.advance(args[0])
            settle()
            out.append(("now", clock.t))
            continue
        item, who = ITEMS[args[0]], args[1]
        if op == "hit":
            out.append((op, limiter.hit(item, who, cost=args[2])))
        elif op == "test":
            out.append((op, limiter.test(item, who, cost=args[2])))
        elif op == "stats":
            out.append((op, tuple(limiter.get_window_stats(item, who))))
        else:
            limiter.clear(item, who)
    return out


async def run_async(limiter, steps, clock, settle) -> list:
    out = []
    for step in steps:
        op, args = step[0], step[1:]
        if op == "advance":
            clock.advance(args[0])
            await settle()
            out.append(("now", clock.t))
            continue
        item, who = ITEMS[args[0]], args[1]
        if op == "hit":
            out.append((op, await limiter.hit(item, who, cost=args[2])))
        elif op == "test":
            out.append((op, await limiter.test(item, who, cost=args[2])))
        elif op == "stats":
            out.append((op, tuple(await limiter.get_window_stats(item, who))))
        else:
            await limiter.clear(item, who)
    return out


@pytest.fixture
def fake_time(monkeypatch):
    """A fake clock on a window edge of both limits, patched in as time.time."""
    clock = FakeClock(1_000_000.0)
    monkeypatch.setattr(time, "time", clock)
    return clock


def assert_same(expected: list, got: list) -> None:
    assert len(expected) == len(got)
    for i, (e, g) in enumerate(zip(expected, got)):
        assert e == g, f"step {i}: memory:// {e}, fusedb:// {g}"
    hits = [r for op, r in expected if op == "hit"]
    # The trace must exercise both answers and non-trivial statistics.
    assert True in hits and False in hits
    assert any(op == "stats" and 0 < r[1] for op, r in expected)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("seed", [1, 2])
def test_sync_trace_equals_memory(tmp_path, fake_time, strategy, seed):
    steps = trace(seed)
    start = fake_time.t
    memory = MemoryStorage()
    try:
        expected = run_sync(strategies.STRATEGIES[strategy](memory), steps, fake_time,
                            lambda: settle_memory(memory))
    finally:
        memory.timer.cancel()
    fake_time.t = start
    with fusedb.open(str(tmp_path / "db"), clock=fake_time) as db:
        storage = FuseDBStorage("fusedb://", db=db)
        got = run_sync(strategies.STRATEGIES[strategy](storage), steps, fake_time,
                       lambda: None)
    assert_same(expected, got)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_async_trace_equals_memory(tmp_path, fake_time, strategy):
    steps = trace(3)
    start = fake_time.t

    async def on_memory():
        memory = AsyncMemoryStorage()
        return await run_async(aio.strategies.STRATEGIES[strategy](memory), steps, fake_time,
                               lambda: settle_memory_async(memory))

    expected = asyncio.run(on_memory())
    fake_time.t = start
    with fusedb.open(str(tmp_path / "db"), clock=fake_time) as db:
        async def on_fusedb():
            storage = AsyncFuseDBStorage("async+fusedb://", db=db)

            async def nothing():
                return None
            return await run_async(aio.strategies.STRATEGIES[strategy](storage), steps,
                                   fake_time, nothing)

        got = asyncio.run(on_fusedb())
    assert_same(expected, got)
