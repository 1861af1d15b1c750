"""The backbone: a hypothesis state machine drives every operation against a dict
model, with buffers and leaves so small that merges and splits happen many times
in every run, plus close-and-reopen steps after which every key must read back."""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import fusedb
from fusedb.core.entry import parse_decimal
from fusedb.api.scan import prefix_end

from fusedb.testing import TINY, FakeClock
from hypothesis.stateful import run_state_machine_as_test

KEYS = [b"k%02d" % i for i in range(60)] + [b"a", b"a\x00", b"a\x00\x00", b"\xff", b"\xff\xff",
                                             b"user:1", b"user:10", b"user:2"]
keys = st.one_of(st.sampled_from(KEYS), st.binary(min_size=1, max_size=8))
values = st.binary(max_size=120)
ttls = st.one_of(st.none(), st.floats(min_value=0.5, max_value=50))

RUNS = {"merges": 0, "splits": 0}
#: Four slots per buffer: a buffer freezes after four distinct keys.
SMALL = dict(TINY, buffer_slots=4, leaf_max_bytes=400, min_split_entries=4, hot_fills=2)


class Model:
    def __init__(self):
        self.data: dict[bytes, tuple[bytes, float]] = {}   # key -> (value, exp or 0)

    def live(self, now):
        return {k: v for k, (v, e) in self.data.items() if e == 0 or e > now}

    def get(self, k, now):
        v = self.data.get(k)
        if v is None or (v[1] and v[1] <= now):
            return None
        return v

    def incr(self, k, d, now):
        cur = self.get(k, now)
        base, exp = (0, 0.0) if cur is None else (parse_decimal(cur[0]), cur[1])
        if base is None:
            return "not-int"
        new = base + d
        if not -(2**63) <= new < 2**63:
            return "overflow"
        self.data[k] = (str(new).encode(), exp)
        return new


class FuseDBMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        import tempfile
        self.dir = tempfile.mkdtemp(prefix="fusedb-state-")
        self.clock = FakeClock()
        self.db = fusedb.open(self.dir, clock=self.clock, **SMALL)
        self.model = Model()

    def count_merges(self):
        s = self.db.stats()
        RUNS["merges"] += s["merges"]
        RUNS["splits"] += s["splits"]

    def teardown(self):
        self.count_merges()
        self.db.close()
        import shutil
        shutil.rmtree(self.dir)

    @property
    def now(self):
        return self.clock.t

    @rule(k=keys, v=values, ttl=ttls)
    def put(self, k, v, ttl):
        self.db.put(k, v, ttl=ttl)
        self.model.data[k] = (v, self.now + ttl if ttl else 0.0)

    @rule(kvs=st.dictionaries(keys, values, min_size=1, max_size=12))
    def put_many(self, kvs):
        for k, v in kvs.items():
            self.db.put(k, v)
            self.model.data[k] = (v, 0.0)

    @rule()
    def flush(self):
        self.db.flush()
        assert self.db.stats()["frozen_buffers"] == 0

    @rule(k=keys)
    def get(self, k):
        m = self.model.get(k, self.now)
        assert self.db.get(k) == (None if m is None else m[0])

    @rule(k=keys, d=st.one_of(st.integers(-5, 5), st.integers(-(2**63), 2**63 - 1)))
    def incr(self, k, d):
        expect = self.model.incr(k, d, self.now)
        if expect == "not-int":
            try:
                self.db.incr(k, d)
                raise AssertionError("incr on a non-integer must fail")
            except fusedb.NotAnIntegerError:
                pass
        elif expect == "overflow":
            try:
                self.db.incr(k, d)
                raise AssertionError("overflow must fail")
            except fusedb.IntegerOverflowError:
                pass
        else:
            assert self.db.incr(k, d) == expect

    @rule(k=keys)
    def delete(self, k):
        existed = self.model.get(k, self.now) is not None
        self.model.data.pop(k, None)
        assert self.db.delete(k) is existed

    @rule(k=keys, ttl=ttls)
    def expire(self, k, ttl):
        m = self.model.get(k, self.now)
        assert self.db.expire(k, ttl) is (m is not None)
        if m is not None:
            self.model.data[k] = (m[0], self.now + ttl if ttl else 0.0)

    @rule(k=keys)
    def ttl(self, k):
        m = self.model.get(k, self.now)
        got = self.db.ttl(k)
        if m is None:
            assert got == fusedb.TTL_MISSING
        elif m[1] == 0:
            assert got == fusedb.TTL_NONE
        else:
            assert abs(got - (m[1] - self.now)) < 1e-6

    @rule(dt=st.floats(min_value=0.1, max_value=30))
    def advance_clock(self, dt):
        self.clock.advance(dt)

    @rule(ks=st.lists(keys, max_size=5))
    def get_many(self, ks):
        expect = [None if (m := self.model.get(k, self.now)) is None else m[0] for k in ks]
        assert self.db.get_many(ks) == expect

    @rule(ops=st.lists(st.tuples(st.sampled_from(["put", "incr", "delete"]), keys, values),
                       min_size=1, max_size=4))
    def batch(self, ops):
        snapshot = dict(self.model.data)
        failed = False
        for op, k, v in ops:
            if op == "put":
                self.model.data[k] = (v, 0.0)
            elif op == "delete":
                self.model.data.pop(k, None)
            elif isinstance(self.model.incr(k, 1, self.now), str):
                failed = True
        if failed:
            self.model.data = snapshot
        try:
            with self.db.batch() as b:
                for op, k, v in ops:
                    b.put(k, v) if op == "put" else b.incr(k) if op == "incr" else b.delete(k)
            assert not failed, "the batch should have failed"
        except (fusedb.NotAnIntegerError, fusedb.IntegerOverflowError):
            assert failed

    @rule(a=keys, b=st.one_of(st.none(), keys), reverse=st.booleans(),
          limit=st.one_of(st.none(), st.integers(0, 20)))
    def scan_range(self, a, b, reverse, limit):
        live = self.model.live(self.now)
        expect = sorted((k, v) for k, (v, e) in self.model.data.items()
                        if k in live and k >= a and (b is None or k < b))
        if reverse:
            expect.reverse()
        if limit is not None:
            expect = expect[:limit]
        assert list(self.db.scan(a, b, reverse=reverse, limit=limit)) == expect

    @rule(p=st.binary(min_size=1, max_size=2))
    def scan_prefix(self, p):
        live = self.model.live(self.now)
        expect = sorted((k, v) for k, v in live.items() if k.startswith(p))
        assert list(self.db.scan(prefix=p)) == expect
        end = prefix_end(p)
        assert end is None or all(k < end for k, _ in expect)

    @rule()
    def close_and_reopen(self):
        self.count_merges()
        self.db.close()
        self.db = fusedb.open(self.dir, clock=self.clock, **SMALL)
        live = self.model.live(self.now)
        assert dict(self.db.scan()) == live
        for k, v in live.items():
            assert self.db.get(k) == v

    @invariant()
    def full_scan_matches(self):
        live = self.model.live(self.now)
        got = list(self.db.scan())
        assert got == sorted(live.items())


TestFuseDB = FuseDBMachine.TestCase
TestFuseDB.settings = settings(max_examples=40, stateful_step_count=60, deadline=None,
                               suppress_health_check=list(HealthCheck))


def test_runs_merge_and_split_many_times():
    """The sizes above do exercise merges and splits, many times per run."""
    RUNS.update(merges=0, splits=0)
    run_state_machine_as_test(FuseDBMachine, settings=settings(
        max_examples=4, stateful_step_count=150, deadline=None, database=None, derandomize=True,
        suppress_health_check=list(HealthCheck)))
    assert RUNS["merges"] + RUNS["splits"] >= 20 and RUNS["splits"] >= 3, RUNS
