"""The multiprocess engine with real processes: a router with worker processes,
clients attached through shared memory, pools, fork, pickling, pinning."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import time

import hypothesis.strategies as st
import psutil
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import fusedb
from fusedb import testing

import mp_helpers
from mp_helpers import FORK, Client
from fusedb.testing import TINY, Model, outcome

MP = dict(TINY, shards=2)
SPAWN = multiprocessing.get_context("spawn")
#: Keys on both shards: shard 0 owns keys below 0x80, shard 1 the rest.
COUNTERS = [b"\x10c%d" % i for i in range(4)] + [b"\x90c%d" % i for i in range(4)]


def test_router_starts_one_worker_process_per_shard(tmp_path):
    with fusedb.open(str(tmp_path / "db"), **MP) as db:
        stats = db.stats()
        assert stats["mode"] == "multiprocess"
        pids = [w["pid"] for w in stats["workers"]]
        assert len(pids) == 2 and len(set(pids)) == 2 and os.getpid() not in pids
        for pid in pids:
            assert psutil.Process(pid).ppid() == os.getpid()
    for pid in pids:
        assert not psutil.pid_exists(pid) or \
            psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_open_without_shards_is_embedded(tmp_path):
    with fusedb.open(str(tmp_path / "db"), **TINY) as db:
        assert db.stats()["mode"] == "embedded"
        assert db.stats()["workers"][0]["pid"] == os.getpid()
        with pytest.raises(fusedb.NotRunningError, match="embedded"):
            fusedb.connect(str(tmp_path / "db"))


def test_connect_needs_a_running_database(tmp_path):
    with pytest.raises(fusedb.NotRunningError, match="no database is open"):
        fusedb.connect(str(tmp_path / "nothing"))


def test_second_open_fails_and_says_to_connect(tmp_path):
    path = str(tmp_path / "db")
    with fusedb.open(path, **MP):
        with pytest.raises(fusedb.LockedError, match="connect"):
            fusedb.open(path, **MP)


def test_counters_sum_exactly_over_a_spawn_pool(tmp_path):
    """N processes x M increments on shared counters, handle passed by pickling."""
    with fusedb.open(str(tmp_path / "db"), **MP) as db:
        n, m = 4, 150
        with SPAWN.Pool(n) as pool:
            done = pool.starmap(mp_helpers.add, [(db, COUNTERS, m)] * n)
        assert sum(done) == n * m * len(COUNTERS)
        for k in COUNTERS:
            assert db.get(k) == b"%d" % (n * m)
        db.flush()
        assert db.stats()["merges"] > 0
        assert [db.get(k) for k in COUNTERS] == [b"%d" % (n * m)] * len(COUNTERS)


def test_counters_sum_exactly_over_a_fork_pool_with_inherited_handle(tmp_path):
    """gunicorn-style: the handle is inherited through fork() and re-attaches."""
    with fusedb.open(str(tmp_path / "db"), **MP) as db:
        db.incr(COUNTERS[0], 1000)
        with FORK.Pool(3, initializer=mp_helpers.init_inherited, initargs=(db,)) as pool:
            pool.starmap(mp_helpers.add_inherited, [(COUNTERS, 100)] * 3)
        assert db.get(COUNTERS[0]) == b"1300"
        assert all(db.get(k) == b"300" for k in COUNTERS[1:])


def test_reads_after_a_write_in_another_process_see_it(tmp_path):
    path = str(tmp_path / "db")
    with fusedb.open(path, **MP) as db:
        a, b = Client(path), Client(path)
        try:
            for i in range(50):
                k = bytes([i * 5]) + b"key"
                db.put(k, b"router%d" % i)
                assert a("get", k) == b"router%d" % i
                a("put", k, b"a%d" % i)
                assert b("get", k) == b"a%d" % i
                assert db.get(k) == b"a%d" % i
            a("flush")                       # merged into segments: still visible
            assert b("get", bytes([5]) + b"key") == b"a1"
            assert b("delete", bytes([5]) + b"key") is True
            assert db.get(bytes([5]) + b"key") is None
        finally:
            a.close()
            b.close()


def test_inherited_embedded_handle_fails_clearly_in_the_child(tmp_path):
    with fusedb.open(str(tmp_path / "db"), **TINY) as db:
        db.put(b"k", b"v")
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                db.get(b"k")
                msg = b"no error"
            except fusedb.ForkedError as e:
                msg = b"ForkedError" if b"fusedb.connect" in str(e).encode() else b"bad message"
            except BaseException as e:  # noqa: BLE001 - reported to the parent
                msg = repr(e).encode()
            os.write(w, msg)
            os._exit(0)
        os.close(w)
        got = os.read(r, 200)
        os.close(r)
        os.waitpid(pid, 0)
        assert got == b"ForkedError"
        assert db.get(b"k") == b"v"          # the parent's handle is untouched
        with pytest.raises(fusedb.ForkedError):
            pickle.dumps(db)


def test_closed_router_makes_clients_fail_clearly(tmp_path):
    path = str(tmp_path / "db")
    db = fusedb.open(path, **MP)
    c = Client(path)
    try:
        c("put", b"k", b"v")
        db.close()
        assert c.call_raw("get", b"k") == ("err", "ClosedError")
        assert c.call_raw("put", b"k", b"w") == ("err", "ClosedError")
    finally:
        c.close()
    with fusedb.open(path, **MP) as db:
        assert db.get(b"k") == b"v"


def test_pin_puts_each_worker_on_one_cpu(tmp_path):
    cpus = sorted(psutil.Process().cpu_affinity())
    with fusedb.open(str(tmp_path / "db"), pin=True, **MP) as db:
        affinity = [w["cpu_affinity"] for w in db.stats()["workers"]]
    assert affinity == [[cpus[i % len(cpus)]] for i in range(2)]
    with fusedb.open(str(tmp_path / "db2"), pin=[cpus[-1]], **MP) as db:
        assert [w["cpu_affinity"] for w in db.stats()["workers"]] == [[cpus[-1]]] * 2


def test_reopen_with_another_shard_count_keeps_data(tmp_path):
    path = str(tmp_path / "db")
    with fusedb.open(path, **MP) as db:
        for i in range(300):
            db.put(bytes([i % 256]) + b"%d" % i, b"v%d" % i)
    with fusedb.open(path, **dict(MP, shards=3)) as db:
        assert len(dict(db.scan())) == 300
        db.put(b"\xffz", b"new")
    with fusedb.open(path, **TINY) as db:
        got = dict(db.scan())
    assert len(got) == 301 and got[b"\x07" + b"7"] == b"v7"


# -- several client processes, one model ----------------------------------------------

keys = st.sampled_from([bytes([b]) + b"k" for b in (0x05, 0x30, 0x70, 0x85, 0xC0, 0xF0)])


class MultiprocessMachine(RuleBasedStateMachine):
    """Random operations, each by a randomly chosen real process (the router or
    one of two attached clients), checked against one dict."""

    def __init__(self):
        super().__init__()
        import tempfile
        self.dir = tempfile.mkdtemp(prefix="fusedb-mp-", dir=os.environ["FUSEDB_TEST_TMP"])
        self.db = fusedb.open(self.dir, **MP)
        self.clients = [Client(self.dir), Client(self.dir)]
        self.model = Model()        # no TTLs: the time is 0

    def call(self, who: int, name: str, *args):
        if who == 0:
            try:
                return "ok", (dict(self.db.scan()) if name == "scan" else
                              getattr(self.db, name)(*args))
            except Exception as e:  # noqa: BLE001 - compared with the clients' answers
                return "err", type(e).__name__
        return self.clients[who - 1].call_raw(name, *args)

    def teardown(self):
        import shutil
        for c in self.clients:
            c.close()
        self.db.close()
        shutil.rmtree(self.dir)

    @rule(who=st.integers(0, 2), k=keys, v=st.binary(max_size=40))
    def put(self, who, k, v):
        assert self.call(who, "put", k, v) == ("ok", None)
        self.model.put(k, v, None, 0.0)

    @rule(who=st.integers(0, 2), k=keys)
    def get(self, who, k):
        assert self.call(who, "get", k) == ("ok", self.model.get(k, 0.0))

    @rule(who=st.integers(0, 2), k=keys, d=st.integers(-5, 5))
    def incr(self, who, k, d):
        assert self.call(who, "incr", k, d) == outcome(self.model.incr, k, d, 0.0)

    @rule(who=st.integers(0, 2), k=keys)
    def delete(self, who, k):
        assert self.call(who, "delete", k) == outcome(self.model.delete, k, 0.0)

    @rule(who=st.integers(0, 2))
    def flush(self, who):
        assert self.call(who, "flush") == ("ok", None)

    @invariant()
    def every_process_sees_the_model(self):
        for who in range(3):
            assert self.call(who, "scan") == ("ok", self.model.live())


TestMultiprocessModel = MultiprocessMachine.TestCase
TestMultiprocessModel.settings = settings(max_examples=6, stateful_step_count=25,
                                          deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(autouse=True)
def _tmp_for_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSEDB_TEST_TMP", str(tmp_path))


def test_writers_in_several_processes_while_leaves_split(tmp_path):
    """Splits publish new routing versions while clients write; every write lands."""
    path = str(tmp_path / "db")
    with fusedb.open(path, **MP) as db:
        clients = [Client(path), Client(path)]
        try:
            for i in range(400):
                for n, c in enumerate(clients):
                    c("put", bytes([(i * 7 + n * 128) % 256]) + b"%d-%d" % (n, i), b"x" * 50)
        finally:
            for c in clients:
                c.close()
        got = dict(db.scan())
        assert len(got) == 800
        assert db.stats()["splits"] > 0
        assert db.stats()["leaves"] > 2


@pytest.mark.parametrize("to", ["router", "process group"])
def test_sigterm_closes_cleanly(tmp_path, to):
    """SIGTERM to the router, or to its whole process group (as `timeout`,
    `kill -TERM -PGID` or a systemd stop send it): an orderly close."""
    import signal
    import subprocess
    import sys
    import time
    path = str(tmp_path / "db")
    child = os.path.join(os.path.dirname(__file__), "crash_child.py")
    p = subprocess.Popen([sys.executable, child, path, "interval", "3", "0", "router"],
                         stdout=subprocess.PIPE, start_new_session=True)
    assert p.stdout.read(1) == b"R"
    time.sleep(0.3)
    if to == "router":
        p.send_signal(signal.SIGTERM)
    else:
        os.killpg(p.pid, signal.SIGTERM)
    assert p.wait(60) == 128 + signal.SIGTERM
    data = p.stdout.read()
    p.stdout.close()
    assert len(data) >= 4
    # A clean close: no WAL left, nothing in /dev/shm for this database.
    assert not [f for f in os.listdir(path) if f.startswith("wal-")]
    tag = fusedb.shm.region.tag_for(path)
    assert not [e for e in os.listdir("/dev/shm") if tag in e]


def test_split_keys_spread_a_new_database_over_the_shards(tmp_path):
    path = str(tmp_path / "db")
    with fusedb.open(path, split_keys=["user4", b"user8"], **dict(MP, shards=2)) as db:
        st_ = db.stats()
        assert st_["leaves"] == 3
        for i in range(300):
            db.put(b"user%d" % i, b"v")
        per_shard = testing.writes_per_shard(db)
        assert per_shard[0] > 0 and per_shard[1] > 0, per_shard
        c = Client(path)            # attached processes get the options too
        try:
            assert c("get", b"user42") == b"v"
        finally:
            c.close()
    # Only a new database is pre-split: reopening keeps the data's own leaves.
    with fusedb.open(path, split_keys=[b"zzz"], **MP) as db:
        assert len(dict(db.scan())) == 300


@pytest.mark.parametrize("bad", [b"abc", [b"b", b"a"], [b"a", b"a"], [b""], [1], [b"x" * 33]])
def test_bad_split_keys_are_refused(tmp_path, bad):
    with pytest.raises(fusedb.InvalidArgumentError):
        fusedb.open(str(tmp_path / "db"), split_keys=bad, **TINY)


def test_sigterm_kills_an_attached_client_at_once(tmp_path):
    """Clients keep SIGTERM's default action: a client blocked in a C call (a
    pool worker waiting on its task queue, as in Pool.terminate()) dies at once;
    the router is not disturbed, and the dead client's slot is dropped."""
    import subprocess
    import sys
    path = str(tmp_path / "db")
    with fusedb.open(path, **MP) as db:
        code = ("import sys, threading, fusedb\n"
                f"db = fusedb.connect({path!r})\n"
                "db.put(b'client', b'1')\n"
                "print('ready', flush=True)\n"
                "threading.Event().wait()\n")
        p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
        try:
            assert p.stdout.readline() == b"ready\n"
            assert p.pid in [c["pid"] for c in db.stats()["clients"]]
            p.send_signal(signal.SIGTERM)
            assert p.wait(10) == -signal.SIGTERM
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stdout.close()
        assert p.pid not in [c["pid"] for c in db.stats()["clients"]]
        assert db.get(b"client") == b"1"
        db.put(b"after", b"2")
        assert db.get(b"after") == b"2"


def test_a_forked_child_of_the_router_dies_of_sigterm_at_once(tmp_path):
    """A fork()ed child owns no database: it gets SIGTERM's default action back
    instead of the router's deferring handler (with the inherited handler a
    fork pool's worker could survive Pool.terminate(), which then hung)."""
    with fusedb.open(str(tmp_path / "db"), **MP) as db:
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL   # the router's
        pid = os.fork()
        if pid == 0:     # the child: wait to be killed; never return into pytest
            try:
                time.sleep(30)
            finally:
                os._exit(2)
        time.sleep(0.2)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.01)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child survived SIGTERM")
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM, status
        db.put(b"after", b"fork")
        assert db.get(b"after") == b"fork"
