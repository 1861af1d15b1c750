"""The one stateful test of the contract: a hypothesis state machine drives every
operation (point operations, the mapping protocol, TTLs, scans, batches, flush,
and update where the API has it) against fusedb.testing.Model, in every access
mode. Fake-clock modes also move the clock; with the real clock (the client
mode) TTLs are long, so nothing expires mid-check (test_ttl.py covers expiry)."""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from fusedb.testing import Model, outcome

KEYS = [b"k%02d" % i for i in range(12)] + [b"\x90k%02d" % i for i in range(12)] + \
    [b"a", b"a\x00", b"\xff", b"\xff\xff", b"user:1", b"user:10"]
keys = st.one_of(st.sampled_from(KEYS), st.binary(min_size=1, max_size=6))
values = st.one_of(st.binary(max_size=60), st.sampled_from([b"0", b"7", b"-3", b"01", b"x"]))
ttls = st.one_of(st.none(), st.floats(min_value=0.5, max_value=40))
deltas = st.one_of(st.integers(-5, 5), st.integers(-(2 ** 63), 2 ** 63 - 1))
bounds = st.one_of(st.none(), keys)


WRITES = ["put", "incr", "delete", "expire", "add", "getdel", "getex", "touch"]


class Boom(Exception):
    """Raised by an update function: update must write nothing and re-raise."""


def _boom(_cur):
    raise Boom()


#: Update functions: current value (bytes or None) -> new bytes, None, or a bad type.
UPDATES = {"append": lambda c: (c or b"") + b"+", "delete": lambda c: None,
           "set": lambda c: b"set", "bad-type": lambda c: 42, "raise": _boom,
           "same": lambda c: c}
#: put's options, any combination (the invalid ones must raise as the model does).
put_options = st.fixed_dictionaries({}, optional={o: st.booleans()
                                                  for o in ("nx", "xx", "keepttl", "get")})


class ContractMachine(RuleBasedStateMachine):
    """Compares each call's outcome (result, or error class) with the model's."""

    def __init__(self, access):
        super().__init__()
        self.access = access
        access.wipe()
        self.db = access.db
        self.model = Model()

    @property
    def now(self) -> float:
        return self.access.clock()

    def ttl(self, ttl):
        """With the real clock, TTLs far beyond the test's length."""
        return ttl if ttl is None or self.access.fake_clock else ttl + 1000

    def same(self, db_call, model_call):
        got, want = outcome(db_call), outcome(model_call)
        assert got == want, (got, want)
        return got

    @rule(k=keys, v=values, ttl=ttls)
    def put(self, k, v, ttl):
        ttl = self.ttl(ttl)
        self.same(lambda: self.db.put(k, v, ttl=ttl), lambda: self.model.put(k, v, ttl, self.now))

    @rule(k=keys, v=values)
    def setitem(self, k, v):
        self.db[k] = v
        self.model.put(k, v, None, self.now)

    @rule(k=keys)
    def get(self, k):
        want = self.model.get(k, self.now)
        assert self.db.get(k) == want
        assert (k in self.db) is (want is not None)
        assert outcome(lambda: self.db[k]) == (("ok", want) if want is not None
                                                else ("err", "FuseDBKeyError"))

    @rule(ks=st.lists(keys, max_size=5))
    def get_many(self, ks):
        assert self.db.get_many(ks) == self.model.get_many(ks, self.now)

    @rule(k=keys, d=deltas, down=st.booleans())
    def incr(self, k, d, down):
        if down:
            self.same(lambda: self.db.decr(k, d), lambda: self.model.incr(k, -d, self.now))
        else:
            self.same(lambda: self.db.incr(k, d), lambda: self.model.incr(k, d, self.now))

    @rule(k=keys, d=deltas, ttl=ttls, xx=st.booleans())
    def incr_ttl(self, k, d, ttl, xx):
        ttl = self.ttl(ttl)
        self.same(lambda: self.db.incr(k, d, ttl, xx=xx),
                  lambda: self.model.incr(k, d, self.now, ttl, xx))

    @rule(k=keys, v=values, ttl=ttls, options=put_options)
    def put_with_options(self, k, v, ttl, options):
        ttl = self.ttl(ttl)
        self.same(lambda: self.db.put(k, v, ttl, **options),
                  lambda: self.model.put(k, v, ttl, self.now, **options))

    @rule(k=keys, v=values, ttl=ttls)
    def add(self, k, v, ttl):
        ttl = self.ttl(ttl)
        self.same(lambda: self.db.add(k, v, ttl), lambda: self.model.add(k, v, ttl, self.now))

    @rule(k=keys)
    def getdel(self, k):
        self.same(lambda: self.db.getdel(k), lambda: self.model.getdel(k, self.now))

    @rule(k=keys, ttl=ttls, touch=st.booleans())
    def getex_touch(self, k, ttl, touch):
        ttl = self.ttl(ttl)
        if touch:
            self.same(lambda: self.db.touch(k, ttl), lambda: self.model.touch(k, ttl, self.now))
        else:
            self.same(lambda: self.db.getex(k, ttl), lambda: self.model.getex(k, ttl, self.now))

    @rule(k=keys, mapping=st.booleans())
    def delete(self, k, mapping):
        if mapping:
            existed = self.model.delete(k, self.now)
            assert outcome(self.db.__delitem__, k) == (("ok", None) if existed
                                                       else ("err", "FuseDBKeyError"))
        else:
            self.same(lambda: self.db.delete(k), lambda: self.model.delete(k, self.now))

    @rule(k=keys, ttl=ttls)
    def expire(self, k, ttl):
        ttl = self.ttl(ttl)
        self.same(lambda: self.db.expire(k, ttl), lambda: self.model.expire(k, ttl, self.now))

    @rule(k=keys)
    def ttl_of(self, k):
        got, want = self.db.ttl(k), self.model.ttl(k, self.now)
        assert abs(got - want) < (1e-6 if self.access.fake_clock else 0.5), (got, want)

    @precondition(lambda self: self.access.fake_clock)
    @rule(dt=st.floats(min_value=0.1, max_value=30))
    def advance_clock(self, dt):
        self.access.advance(dt)

    def _ops(self, ops):
        return [(name, k, (v, options) if name == "put" else v if name == "add" else (d, xx),
                 None if name == "incr" and xx else self.ttl(ttl))
                for name, k, v, d, ttl, options, xx in ops]

    @staticmethod
    def _run_ops(target, ops) -> list:
        """Each op on ``target`` (a batch or a transaction); what each returned."""
        out = []
        for name, k, arg, ttl in ops:
            if name == "put":
                out.append(target.put(k, arg[0], ttl, **arg[1]))
            elif name == "add":
                out.append(target.add(k, arg, ttl))
            elif name == "incr":
                out.append(target.incr(k, arg[0], ttl, xx=arg[1]))
            elif name in ("delete", "getdel", "get"):
                out.append(getattr(target, name)(k))
            elif name == "keys":
                out.append(target.keys())
            else:
                out.append(getattr(target, name)(k, ttl))
        return out

    @rule(ops=st.lists(st.tuples(st.sampled_from(WRITES), keys, values, deltas, ttls,
                                 put_options, st.booleans()),
                       min_size=1, max_size=6))
    def batch(self, ops):
        ops = self._ops(ops)

        def run():
            with self.db.batch() as b:
                self._run_ops(b, ops)
            return b.results
        self.same(run, lambda: self.model.batch(ops, self.now))

    @rule(ops=st.lists(st.tuples(st.sampled_from(WRITES + ["get", "keys"]), keys, values,
                                 deltas, ttls, put_options, st.booleans()),
                       min_size=1, max_size=6),
          declared=st.one_of(st.none(), st.lists(keys, max_size=3)))
    def transact(self, ops, declared):
        """db.transact: the ops' results at once, the writes all or nothing, over
        declared keys (a key outside them reruns fn with every shard locked)."""
        ops = self._ops(ops)
        self.same(lambda: self.db.transact(lambda tx: self._run_ops(tx, ops), declared),
                  lambda: self.model.batch(ops, self.now))

    @rule(start=bounds, stop=bounds, reverse=st.booleans(),
          limit=st.one_of(st.none(), st.integers(0, 8)))
    def scan_range(self, start, stop, reverse, limit):
        want = self.model.scan(self.now, start=start, stop=stop, limit=limit, reverse=reverse)
        assert list(self.db.scan(start, stop, limit=limit, reverse=reverse)) == want

    @rule(p=st.one_of(st.sampled_from([b"k", b"\x90", b"a", b"\xff", b"user:1"]),
                      st.binary(min_size=1, max_size=2)), reverse=st.booleans())
    def scan_prefix(self, p, reverse):
        want = self.model.scan(self.now, prefix=p, reverse=reverse)
        assert list(self.db.scan(prefix=p, reverse=reverse)) == want

    @rule()
    def flush(self):
        self.db.flush()

    @rule(k=keys, fn=st.sampled_from(sorted(UPDATES)), ttl=ttls)
    def update(self, k, fn, ttl):
        ttl = self.ttl(ttl)
        f = UPDATES[fn]
        self.same(lambda: self.db.update(k, f, ttl=ttl),
                  lambda: self.model.update(k, f, ttl, self.now))

    @invariant()
    def full_scan_matches(self):
        assert list(self.db.scan()) == sorted(self.model.live(self.now).items())


def test_contract_state_machine(access):
    run_state_machine_as_test(
        lambda: ContractMachine(access),
        settings=settings(max_examples=access.examples, stateful_step_count=40, deadline=None,
                          suppress_health_check=list(HealthCheck)))
