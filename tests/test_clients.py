"""Issue 12: attached clients listed in stats (pid, since when). Real client
processes attach to a real router; the registry lives in the meta block
(docs/format.md, "Client registry")."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import fusedb
from fusedb import testing
from fusedb.core.layout import CLIENT_SLOTS, C_START, C_WORDS
from fusedb.shm import region
from fusedb.shm.meta import Meta, process_start

from mp_helpers import Client


def listed(db) -> list[int]:
    return sorted(c["pid"] for c in db.stats()["clients"])


def sleeper() -> subprocess.Popen:
    """A live process that is not a client (stopped by its pid in a finally)."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def stop(p: subprocess.Popen) -> None:
    p.kill()
    p.wait(30)


def meta_of(db) -> Meta:
    """This process's own mapping of the database's meta block (close it)."""
    return Meta(region.name(region.tag_for(db.path), "meta"))


def test_clients_listed_closed_and_killed_ones_gone(tmp_path):
    path = str(tmp_path / "db")
    db = fusedb.open(path, shards=2)
    clients = []
    try:
        assert db.stats()["clients"] == [] and db.stats()["clients_unlisted"] == 0
        t0 = time.time()
        clients = [Client(path) for _ in range(3)]
        t1 = time.time()
        pids = sorted(c.proc.pid for c in clients)
        st_ = db.stats()
        # Exactly the clients: the router (this process) and the workers take no slot.
        assert sorted(c["pid"] for c in st_["clients"]) == pids
        assert all(w["pid"] for w in st_["workers"])
        assert all(t0 <= c["since"] <= t1 for c in st_["clients"]), (t0, st_["clients"], t1)
        # Every process sees the same list.
        assert sorted(c["pid"] for c in clients[0]("stats")["clients"]) == pids
        # A child forked by a client that never uses the inherited handle is no client.
        kid = clients[0]("fork")
        try:
            assert listed(db) == pids
        finally:
            os.kill(kid, signal.SIGKILL)
        # close() unlists.
        gone = clients.pop(0)
        gone.close()
        pids.remove(gone.proc.pid)
        assert listed(db) == pids
        # SIGKILL: the next look prunes it.
        killed = clients.pop(0)
        killed.proc.kill()
        killed.proc.join(30)
        pids.remove(killed.proc.pid)
        assert listed(db) == pids
        # A new client takes a freed slot.
        clients.append(Client(path))
        assert listed(db) == sorted(pids + [clients[-1].proc.pid])
        assert db.stats()["clients_unlisted"] == 0
    finally:
        for c in clients:
            c.close()
        db.close()


def test_two_handles_of_one_process_take_two_slots(tmp_path):
    path = str(tmp_path / "db")
    db = fusedb.open(path, shards=1)
    try:
        a = fusedb.connect(path)
        b = fusedb.connect(path)
        got = db.stats()["clients"]
        assert [c["pid"] for c in got] == [os.getpid()] * 2
        assert got[0]["since"] <= got[1]["since"]
        a.close()
        assert [c["since"] for c in db.stats()["clients"]] == [got[1]["since"]]
        b.close()
        assert db.stats()["clients"] == []
    finally:
        db.close()


def test_a_forked_child_reattaching_is_listed_with_its_own_pid(tmp_path):
    path = str(tmp_path / "db")
    db = fusedb.open(path, shards=1)
    try:
        c = fusedb.connect(path)
        c.put(b"k", b"v")
        up_r, up_w = os.pipe()
        down_r, down_w = os.pipe()
        pid = os.fork()
        if pid == 0:     # the child: re-attach by using the inherited handle
            code = 1
            try:
                os.close(up_r)
                os.close(down_w)
                assert c.get(b"k") == b"v"
                os.write(up_w, b"1")
                os.read(down_r, 1)
                c.close()
                os.write(up_w, b"2")
                code = 0
            finally:
                os._exit(code)
        os.close(up_w)
        os.close(down_r)
        try:
            assert os.read(up_r, 1) == b"1"
            assert listed(db) == sorted([os.getpid(), pid])
            os.write(down_w, b"g")
            assert os.read(up_r, 1) == b"2"
            # The child's close unlisted the child, not the parent's handle.
            assert listed(db) == [os.getpid()]
        finally:
            os.close(down_w)
            os.close(up_r)
            _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        c.close()
        assert listed(db) == []
    finally:
        db.close()


def test_full_registry_attach_works_unlisted(tmp_path):
    path = str(tmp_path / "db")
    db = fusedb.open(path, shards=1)
    p = sleeper()
    meta = meta_of(db)
    try:
        # Every slot held by a live process that is no client.
        with testing.meta_lock(db):
            slots = [meta.register_client(p.pid, time.time_ns() // 1000)
                     for _ in range(CLIENT_SLOTS)]
        assert slots == list(range(CLIENT_SLOTS))
        c = fusedb.connect(path)
        try:
            c.put(b"k", b"v")
            assert c.get(b"k") == b"v"
            st_ = db.stats()
            assert st_["clients_unlisted"] == 1
            assert [x["pid"] for x in st_["clients"]] == [p.pid] * CLIENT_SLOTS
        finally:
            c.close()
        # Its close changed no slot.
        assert [x["pid"] for x in db.stats()["clients"]] == [p.pid] * CLIENT_SLOTS
        stop(p)
        assert db.stats()["clients"] == []
        c = fusedb.connect(path)
        assert listed(db) == [os.getpid()] and db.stats()["clients_unlisted"] == 1
        c.close()
    finally:
        stop(p)
        meta.close()
        db.close()


def test_a_failed_attach_leaves_no_slot(tmp_path):
    """An attach that cannot take the meta lock to list itself fails with
    LockTimeoutError and leaves no slot (and, conftest checks, no mapping).
    The worker's rounds are slowed (merge_tick): a round reading the leaf table
    while the meta lock is held past lock_timeout fails the worker, which is
    not what this test is about."""
    path = str(tmp_path / "db")
    db = fusedb.open(path, shards=1, lock_timeout=0.5, merge_tick=60.0)
    try:
        holder = Client(path)
        try:
            holder("hold_lock", "meta")
            with pytest.raises(fusedb.LockTimeoutError):
                fusedb.connect(path)
        finally:
            holder.proc.kill()       # the meta lock's next taker recovers it
            holder.proc.join(30)
        assert listed(db) == []
        c = fusedb.connect(path)
        assert listed(db) == [os.getpid()]
        c.close()
    finally:
        db.close()


def test_a_reused_pid_is_not_taken_for_the_client(tmp_path):
    nm = region.name(f"clients{os.getpid()}", "meta")
    m = Meta(nm, 8, 8, 1, create=True)
    try:
        slot = m.register_client(os.getpid(), 5_000_000)
        assert m.live_clients() == [(os.getpid(), 5.0)]
        # Same pid, another start time: another process that got the pid.
        m.clients[slot * C_WORDS + C_START] += 1
        assert m.live_clients() == []
        assert m.register_client(os.getpid(), 6_000_000) == slot
    finally:
        m.close()
        region.Region(nm).unlink()


def test_process_start_names_a_process():
    p = sleeper()
    try:
        s = process_start(p.pid)
        assert s is not None and s >= process_start(os.getpid())
        assert process_start(p.pid) == s
    finally:
        stop(p)
    assert process_start(p.pid) is None       # reaped
    assert process_start(0) is None


# -- model ------------------------------------------------------------------------------

# "reg": register pid ``pids[i]`` n times (n = CLIENT_SLOTS or more fills the table).
_op = st.one_of(st.tuples(st.just("reg"), st.integers(0, 2),
                          st.sampled_from([1, 2, 5, CLIENT_SLOTS - 1])),
                st.tuples(st.just("unreg"), st.integers(-1, CLIENT_SLOTS - 1),
                          st.integers(0, 2)),
                st.tuples(st.just("list")))


@pytest.fixture(scope="module")
def dead_pid():
    """The pid of a process that ran and was reaped."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait(30)
    return p.pid


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(ops=st.lists(_op, max_size=10))
def test_registry_against_a_model(ops, dead_pid):
    """register (n times), unregister and live_clients against a list model:
    first a free slot, else the first slot of a dead process, else -1 counted
    unlisted; unregister only by the listed pid; listing prunes the dead."""
    live = (os.getpid(), os.getppid())       # two live processes, neither a client
    pids = live + (dead_pid,)
    nm = region.name(f"clientmodel{os.getpid()}", "meta")
    m = Meta(nm, 8, 8, 1, create=True)
    model: list[tuple[int, int] | None] = [None] * CLIENT_SLOTS
    unlisted = since = 0
    try:
        for op in ops:
            if op[0] == "reg":
                for _ in range(op[2]):
                    since += 1
                    pid = pids[op[1]]
                    want = next((i for i, e in enumerate(model) if e is None), -1)
                    if want < 0:
                        want = next((i for i, e in enumerate(model) if e[0] not in live), -1)
                    if want < 0:
                        unlisted += 1
                    else:
                        model[want] = (pid, since)
                    assert m.register_client(pid, since) == want
            elif op[0] == "unreg":
                slot, pid = op[1], pids[op[2]]
                m.unregister_client(slot, pid)
                if slot >= 0 and model[slot] is not None and model[slot][0] == pid:
                    model[slot] = None
            else:
                assert m.live_clients() == [(e[0], e[1] / 1e6) for e in model
                                            if e is not None and e[0] in live]
                model = [e if e is None or e[0] in live else None for e in model]
            assert m.unlisted_clients() == unlisted
    finally:
        m.close()
        region.Region(nm).unlink()
