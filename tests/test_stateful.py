"""The backbone: a hypothesis state machine drives every operation against a dict
model, with buffers and leaves so small that merges and splits happen many times
in every run, plus close-and-reopen steps after which every key must read back."""

from __future__ import annotations

import array

import hypothesis.strategies as st
import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import fusedb

from fusedb.testing import SMALL, FakeClock, Model, outcome, prefix_end
from hypothesis.stateful import run_state_machine_as_test

KEYS = [b"k%02d" % i for i in range(60)] + [b"a", b"a\x00", b"a\x00\x00", b"\xff", b"\xff\xff",
                                             b"user:1", b"user:10", b"user:2"]
keys = st.one_of(st.sampled_from(KEYS), st.binary(min_size=1, max_size=8))
values = st.binary(max_size=120)
ttls = st.one_of(st.none(), st.floats(min_value=0.5, max_value=50))

RUNS = {"merges": 0, "splits": 0}



def _strided(v: bytes) -> np.ndarray:
    """``v`` as a non-contiguous numpy array (every other byte of a buffer)."""
    a = np.zeros(2 * len(v), dtype=np.uint8)
    a[::2] = np.frombuffer(v, dtype=np.uint8)
    return a[::2]


#: The same bytes as other buffer types: each must store exactly those bytes.
AS_BUFFER = {"bytes": bytes, "bytearray": bytearray, "memoryview": memoryview,
             "array.array": lambda v: array.array("B", v),
             "numpy": lambda v: np.frombuffer(v, dtype=np.uint8), "numpy-strided": _strided}


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

    def same(self, db_call, model_call):
        got, want = outcome(db_call), outcome(model_call)
        assert got == want, (got, want)

    @rule(k=keys, v=values, ttl=ttls)
    def put(self, k, v, ttl):
        self.db.put(k, v, ttl=ttl)
        self.model.put(k, v, ttl, self.now)

    @rule(k=keys, v=values, kind=st.sampled_from(sorted(AS_BUFFER)))
    def put_buffer(self, k, v, kind):
        self.db[k] = AS_BUFFER[kind](v)
        self.model.put(k, v, None, self.now)

    @rule()
    def mapping_views(self):
        """Iteration, keys(), values(), items() and len() against the dict model."""
        want = self.model.items(self.now)
        assert list(self.db.items()) == want
        assert list(self.db) == [k for k, _ in want]
        assert list(self.db.values()) == [v for _, v in want]
        assert len(self.db) == len(want)

    @rule(kvs=st.dictionaries(keys, values, min_size=1, max_size=12))
    def put_many(self, kvs):
        for k, v in kvs.items():
            self.db.put(k, v)
            self.model.put(k, v, None, self.now)

    @rule()
    def flush(self):
        self.db.flush()
        assert self.db.stats()["frozen_buffers"] == 0

    @rule(k=keys)
    def get(self, k):
        assert self.db.get(k) == self.model.get(k, self.now)

    @rule(k=keys, d=st.one_of(st.integers(-5, 5), st.integers(-(2**63), 2**63 - 1)))
    def incr(self, k, d):
        self.same(lambda: self.db.incr(k, d), lambda: self.model.incr(k, d, self.now))

    @rule(k=keys)
    def delete(self, k):
        self.same(lambda: self.db.delete(k), lambda: self.model.delete(k, self.now))

    @rule(k=keys, ttl=ttls)
    def expire(self, k, ttl):
        self.same(lambda: self.db.expire(k, ttl), lambda: self.model.expire(k, ttl, self.now))

    @rule(k=keys)
    def ttl(self, k):
        assert abs(self.db.ttl(k) - self.model.ttl(k, self.now)) < 1e-6

    @rule(dt=st.floats(min_value=0.1, max_value=30))
    def advance_clock(self, dt):
        self.clock.advance(dt)

    @rule(ks=st.lists(keys, max_size=5))
    def get_many(self, ks):
        assert self.db.get_many(ks) == self.model.get_many(ks, self.now)

    @rule(ops=st.lists(st.tuples(st.sampled_from(["put", "incr", "delete"]), keys, values),
                       min_size=1, max_size=4))
    def batch(self, ops):
        ops = [(op, k, 1 if op == "incr" else v, None) for op, k, v in ops]

        def run():
            with self.db.batch() as b:
                for op, k, arg, _ttl in ops:
                    b.put(k, arg) if op == "put" else b.incr(k) if op == "incr" else b.delete(k)
            return b.results
        self.same(run, lambda: self.model.batch(ops, self.now))

    @rule(a=keys, b=st.one_of(st.none(), keys), reverse=st.booleans(),
          limit=st.one_of(st.none(), st.integers(0, 20)))
    def scan_range(self, a, b, reverse, limit):
        expect = self.model.scan(self.now, start=a, stop=b, limit=limit, reverse=reverse)
        assert list(self.db.scan(a, b, reverse=reverse, limit=limit)) == expect

    @rule(p=st.binary(min_size=1, max_size=2))
    def scan_prefix(self, p):
        expect = self.model.scan(self.now, prefix=p)
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
