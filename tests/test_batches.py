"""Batches across shards: all or nothing (fusedb/api/batch.py, docs/design.md "Batches").

With shards=2, shard 0 owns keys below 0x80 and shard 1 the rest. A batch that
raises must have applied nothing, whatever shards it spans; one that returns
has applied everything. A process killed while a batch holds two shard locks
leaves both shards repaired and usable."""

from __future__ import annotations

import os
import signal
import tempfile

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, \
    run_state_machine_as_test

import fusedb
from fusedb import testing
from fusedb.core.entry import INT64_MAX, INT64_MIN, parse_decimal

from fusedb.testing import TINY
from mp_helpers import Client

MODES = {"embedded": dict(mode="embedded", shards=2),
         "multiprocess": dict(shards=2, lock_timeout=5.0)}


@pytest.mark.parametrize("mode", MODES)
def test_failing_batch_across_shards_applies_nothing(tmp_path, mode):
    """The issue's input: the failing incr is on shard 1, the writes before it on
    shard 0."""
    with fusedb.open(str(tmp_path / "db"), **MODES[mode]) as db:
        db.put(b"\xf0user:name", b"alice")
        with pytest.raises(fusedb.NotAnIntegerError):
            with db.batch() as b:
                b.put(b"\x10order:1", b"x")
                b.incr(b"\x20stock:widget", 5)
                b.incr(b"\xf0user:name")
        assert db.get(b"\x10order:1") is None
        assert db.get(b"\x20stock:widget") is None
        assert dict(db.scan()) == {b"\xf0user:name": b"alice"}
        # And the same batch without the failing op applies on both shards.
        with db.batch() as b:
            b.put(b"\x10order:1", b"x")
            b.incr(b"\x20stock:widget", 5)
            b.put(b"\xf0user:name", b"bob")
        assert b.results == [None, 5, None]
        assert dict(db.scan()) == {b"\x10order:1": b"x", b"\x20stock:widget": b"5",
                                   b"\xf0user:name": b"bob"}


@pytest.mark.parametrize("mode", MODES)
def test_batch_too_large_for_a_later_shard_applies_nothing(tmp_path, mode):
    """The bounded-size rule across shards: a part that fits on shard 0 and one
    larger than a buffer on shard 1 -> InvalidArgumentError, nothing applied."""
    with fusedb.open(str(tmp_path / "db"), **dict(TINY, **MODES[mode])) as db:
        with pytest.raises(fusedb.InvalidArgumentError):
            with db.batch() as b:
                b.put(b"\x10small", b"v")
                for i in range(40):
                    b.put(b"\x90k%03d" % i, b"v" * 100)
        assert list(db.scan()) == []


# -- random batches against a dict model -------------------------------------------------

#: Keys on both shards; BAD holds a non-integer on each shard, BIG the largest counter.
KEYS = [b"\x10a", b"\x10b", b"\x20c", b"\x7fd", b"\x80e", b"\x90f", b"\xf0g", b"\xffh"]
BAD = [b"\x30bad", b"\xb0bad"]
BIG = [b"\x40big", b"\xc0big"]

op_strategy = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(KEYS), st.binary(max_size=8)),
    st.tuples(st.just("incr"), st.sampled_from(KEYS), st.integers(-5, 5)),
    st.tuples(st.just("delete"), st.sampled_from(KEYS), st.none()),
)
#: An op that fails whatever came before it in the batch (BAD and BIG are never
#: written by the other ops): NotAnIntegerError or IntegerOverflowError.
failing_strategy = st.one_of(st.tuples(st.just("incr"), st.sampled_from(BAD), st.just(1)),
                             st.tuples(st.just("incr"), st.sampled_from(BIG), st.just(1)))


def model_apply(m: dict, ops: list) -> list | None:
    """Apply ``ops`` to model ``m`` (values bytes, counters as decimal bytes) and
    return the results as Batch.results gives them; or leave ``m`` unchanged and
    return None if an op fails (incr of a non-decimal value, or overflow)."""
    new = dict(m)
    out = []
    for kind, k, arg in ops:
        if kind == "put":
            new[k] = arg
            out.append(None)
        elif kind == "delete":
            out.append(new.pop(k, None) is not None)
        else:
            base = parse_decimal(new.get(k, b"0"))
            if base is None or base + arg > INT64_MAX or base + arg < INT64_MIN:
                return None
            new[k] = b"%d" % (base + arg)
            out.append(base + arg)
    m.clear()
    m.update(new)
    return out


class BatchMachine(RuleBasedStateMachine):
    OPTS: dict = {}

    base = ""      # a directory for the databases: set by the test

    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="db-", dir=self.base)
        self.db = fusedb.open(self.dir, **dict(TINY, **self.OPTS))
        self.model = {}
        for k in BAD:
            self.db.put(k, b"not a number")
            self.model[k] = b"not a number"
        for k in BIG:
            self.db.incr(k, INT64_MAX)
            self.model[k] = b"%d" % INT64_MAX

    @rule(ops=st.lists(op_strategy, max_size=8), fail=st.one_of(st.none(), failing_strategy),
          where=st.integers(0, 8))
    def batch(self, ops, fail, where):
        if fail is not None:
            ops = ops[:where] + [fail] + ops[where:]
        expect = model_apply(self.model, ops)
        assert fail is None or expect is None
        try:
            with self.db.batch() as b:
                for kind, k, arg in ops:
                    getattr(b, kind)(k, *(() if arg is None else (arg,)))
        except (fusedb.NotAnIntegerError, fusedb.IntegerOverflowError):
            assert expect is None, "a batch without a failing op failed"
            return
        assert expect is not None, "a batch with a failing op was applied"
        assert b.results == expect

    @rule(k=st.sampled_from(KEYS), v=st.binary(max_size=8))
    def put(self, k, v):
        self.db.put(k, v)
        self.model[k] = v

    @invariant()
    def same_as_model(self):
        assert dict(self.db.scan()) == self.model

    def teardown(self):
        self.db.close()


@pytest.fixture
def machine_base(tmp_path):
    BatchMachine.base = str(tmp_path)
    return tmp_path


@pytest.mark.parametrize("mode, examples, steps",
                         [("embedded", 25, 12), ("multiprocess", 3, 20)])
def test_random_batches_across_shards(machine_base, mode, examples, steps):
    class M(BatchMachine):
        OPTS = MODES[mode]
    run_state_machine_as_test(M, settings=settings(
        max_examples=examples, stateful_step_count=steps, deadline=None,
        suppress_health_check=list(HealthCheck)))


# -- a process killed while a batch holds two shard locks ------------------------------------


def test_process_killed_holding_two_shard_locks_in_a_batch(tmp_path):
    """A client pauses inside a batch that spans both shards (both locks held,
    nothing written yet) and is SIGKILLed there. Each shard's worker repairs its
    own shard (no worker waits for the other's lock), both shards take writes
    again at once, and the batch left nothing behind."""
    path = str(tmp_path / "db")
    with fusedb.open(path, **dict(TINY, **MODES["multiprocess"])) as db:
        m = {}
        for i in range(60):
            k = bytes([0x10 + 0x80 * (i % 2)]) + b"k%02d" % i
            db.put(k, b"v%d" % i)
            m[k] = b"v%d" % i
        c = Client(path)
        try:
            assert c("batch_paused", [b"\x10x", b"\x90y"]) == "paused"
            assert testing.lock_holders(db) == [c.proc.pid] * 2
        finally:
            os.kill(c.proc.pid, signal.SIGKILL)
            c.proc.join()
        db.put(b"\x11after", b"a")          # shard 0: waits for its repair, well in time
        db.put(b"\x91after", b"b")          # shard 1 likewise
        m[b"\x11after"], m[b"\x91after"] = b"a", b"b"
        assert dict(db.scan()) == m
        assert [w["repairs"] for w in db.stats()["workers"]] == [1, 1]
        with db.batch() as b:                # and batches across both work again
            b.put(b"\x10x", b"1")
            b.put(b"\x90y", b"2")
        m[b"\x10x"], m[b"\x90y"] = b"1", b"2"
        assert dict(db.scan()) == m
    with fusedb.open(path, **TINY) as db:
        assert dict(db.scan()) == m
