"""A hypothesis state machine mixing operations with crashes against a model of
what each durability mode guarantees:

* ``crash``: the process dies (threads stop, nothing flushed, shared memory left
  behind, as with SIGKILL). In every mode nothing acknowledged may be lost.
* ``power_loss``: the OS dies too (unsynced file data and shared memory lost,
  via tests/powerloss.py). In ``sync`` mode nothing acknowledged may be lost; in
  the others the state must be the state after some prefix of the history since
  the last point known durable.
"""

from __future__ import annotations

import shutil
import tempfile

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, rule

import fusedb

from fusedb.testing import TINY, Model, crash, outcome, power_cut
from powerloss import install

OPTS = dict(TINY, wal_file_bytes=8192, wal_ring_bytes=16384)
keys = st.sampled_from([b"k%02d" % i for i in range(30)])


class CrashMachine(RuleBasedStateMachine):
    mode = "sync"

    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="fusedb-crash-")
        self.model = Model()                 # no TTLs: the time is 0
        self.history: list[dict] = [{}]      # live states since the last durable point
        self._open()

    def _open(self):
        self.sim, self.undo = install(self.dir)
        self.db = fusedb.open(self.dir, durability=self.mode, **OPTS)

    def _record(self):
        self.history.append(self.model.live())

    def teardown(self):
        self.undo()
        self.db.close()
        shutil.rmtree(self.dir)

    @rule(k=keys, v=st.binary(max_size=50))
    def put(self, k, v):
        self.db.put(k, v)
        self.model.put(k, v, None, 0.0)
        self._record()

    @rule(k=keys, d=st.integers(1, 10))
    def incr(self, k, d):
        got = outcome(self.db.incr, k, d)
        assert got == outcome(self.model.incr, k, d, 0.0)
        if got[0] == "ok":
            self._record()

    @rule(k=keys)
    def delete(self, k):
        assert self.db.delete(k) is self.model.delete(k, 0.0)
        self._record()

    @rule(n=st.integers(1, 40))
    def burst(self, n):
        for i in range(n):
            k = b"k%02d" % (i % 30)
            v = b"b%d" % i
            self.db.put(k, v)
            self.model.put(k, v, None, 0.0)
            self._record()

    @rule()
    def crash(self):
        crash(self.db)
        self.undo()
        self._open()
        assert dict(self.db.scan()) == self.model.live(), \
            "a process crash lost acknowledged writes"
        self.history = [self.model.live()]

    @rule()
    def power_loss(self):
        power_cut(self.db, self.sim, self.undo)
        self._open()
        got = dict(self.db.scan())
        if self.mode == "sync":
            assert got == self.model.live(), "sync mode lost acknowledged writes"
        else:
            assert got in self.history, "the recovered state is no prefix of the history"
        self.model = Model(got)
        self.history = [dict(got)]

    @rule()
    def close_and_reopen(self):
        self.undo()
        self.db.close()
        self._open()
        assert dict(self.db.scan()) == self.model.live()
        self.history = [self.model.live()]


class SyncMachine(CrashMachine):
    mode = "sync"


class IntervalMachine(CrashMachine):
    mode = "interval"


class NoneMachine(CrashMachine):
    mode = "none"


_settings = settings(max_examples=12, stateful_step_count=30, deadline=None,
                     suppress_health_check=list(HealthCheck))
TestSync = SyncMachine.TestCase
TestSync.settings = _settings
TestInterval = IntervalMachine.TestCase
TestInterval.settings = _settings
TestNone = NoneMachine.TestCase
TestNone.settings = _settings
