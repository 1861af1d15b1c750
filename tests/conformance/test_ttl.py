"""TTLs (README: seconds, float; expired keys invisible at once; incr keeps a
TTL and counts an expired key as 0). Fake-clock modes advance the clock; the
client mode (real clock) sleeps past short TTLs, so each test sleeps once."""

from __future__ import annotations

import fusedb

#: A TTL that must not run out during a test's checks, even on a busy machine
#: with the real clock; waits past it are ``T + 0.1``.
T = 1.0


def test_ttl_counts_down(db, access):
    db.put(b"t", b"v", ttl=30)
    before = access.clock()
    got = db.ttl(b"t")
    assert 30 - (access.clock() - before) - 0.5 <= got <= 30
    if access.fake_clock:
        assert got == 30.0
        access.advance(10.5)
        assert db.ttl(b"t") == 19.5
    db.put(b"f", b"v", ttl=2.5)             # float seconds
    assert 2.0 <= db.ttl(b"f") <= 2.5


def test_expired_keys_are_invisible_everywhere(db, access):
    db.put(b"gone", b"v", ttl=T)
    db.put(b"kept", b"v", ttl=100)
    db.put(b"plain", b"v")
    db.incr(b"ctr", 5)
    assert db.expire(b"ctr", T) is True
    assert db.get(b"gone") == b"v" and db.get(b"ctr") == b"5"
    access.advance(T + 0.1)
    for k in (b"gone", b"ctr"):
        assert db.get(k) is None and k not in db
        assert db.ttl(k) == fusedb.TTL_MISSING
    assert db.get_many([b"gone", b"kept"]) == [None, b"v"]
    assert dict(db.scan()) == {b"kept": b"v", b"plain": b"v"}
    assert list(db.scan(reverse=True)) == [(b"plain", b"v"), (b"kept", b"v")]
    assert db.expire(b"gone", 10) is False         # an expired key does not exist
    assert db.delete(b"gone") is False
    assert db.incr(b"ctr") == 1                    # counts as 0 ...
    assert db.ttl(b"ctr") == fusedb.TTL_NONE       # ... with no TTL
    db.put(b"gone", b"again")
    assert db.get(b"gone") == b"again" and db.ttl(b"gone") == fusedb.TTL_NONE


def test_expire_sets_replaces_and_removes(db, access):
    db.put(b"e", b"v")
    assert db.expire(b"e", 50) is True
    assert 49 <= db.ttl(b"e") <= 50
    assert db.expire(b"e", 5) is True
    assert 4 <= db.ttl(b"e") <= 5
    assert db.expire(b"e", None) is True            # ttl=None removes the TTL
    assert db.ttl(b"e") == fusedb.TTL_NONE
    assert db.expire(b"missing", 5) is False and db.get(b"missing") is None
    assert db.expire(b"missing", None) is False


def test_put_replaces_the_ttl_and_incr_keeps_it(db, access):
    db.put(b"p", b"v", ttl=5)
    db.put(b"p", b"w")
    assert db.ttl(b"p") == fusedb.TTL_NONE           # a put without ttl has none
    db.put(b"n", b"10", ttl=50)
    assert db.incr(b"n", 5) == 15
    assert 49 <= db.ttl(b"n") <= 50                  # incr keeps an existing TTL
    db.put(b"q", b"v", ttl=T)
    db.incr(b"c")
    db.expire(b"c", T)
    assert db.incr(b"c") == 2 and 0 < db.ttl(b"c") <= T
    access.advance(T + 0.1)
    assert db.get(b"q") is None and db.get(b"c") is None
    assert db.get(b"n") == b"15"


def test_expired_keys_stay_invisible_after_flush(db, access):
    for i in range(40):
        db.put(b"x%02d" % i, b"v" * 30, ttl=T if i % 2 else None)
    db.flush()
    access.advance(T + 0.1)
    db.flush()
    assert sorted(dict(db.scan())) == [b"x%02d" % i for i in range(0, 40, 2)]
    assert all(db.get(b"x%02d" % i) is None for i in range(1, 40, 2))


def test_incr_keeps_the_ttl_wherever_the_counter_is(db):
    """In the active buffer (incremented in place) or merged into segments."""
    db.incr(b"c", 5)
    db.put(b"v", b"5", ttl=50)
    assert db.expire(b"c", 50)
    assert db.incr(b"c") == 6 and 49 <= db.ttl(b"c") <= 50
    db.flush()
    assert db.incr(b"c") == 7 and 49 <= db.ttl(b"c") <= 50
    assert db.incr(b"v") == 6 and 49 <= db.ttl(b"v") <= 50
    db.flush()
    assert db.decr(b"v") == 5 and 49 <= db.ttl(b"v") <= 50
