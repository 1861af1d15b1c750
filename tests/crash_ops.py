"""A deterministic operation sequence shared by the crash child and its checker:
op(seed, i) is the i-th operation; apply() runs it on a database and model() on a
dict, so the parent can recompute exactly what any prefix of the run leaves."""

from __future__ import annotations

import random

from fusedb.testing import Model


def op(seed: int, i: int, client: int | None = None) -> tuple:
    """The i-th operation. With ``client`` (0..15), every key is moved into that
    client's own key space, spread over both halves of the byte range (so over
    both shards of a 2-shard database: shard 0 owns keys below 0x80); the keys of
    one batch stay in one half, so a batch touches one shard."""
    r = random.Random(seed * 1_000_003 + i)
    x = r.random()
    k = b"k%03d" % r.randrange(300)
    if x < 0.40:
        o = ("put", k, b"%d:" % i + bytes(r.randrange(0, 60)))
    elif x < 0.45:
        o = ("add", k, b"%d:add" % i)
    elif x < 0.75:
        # Half the counters expire, far beyond any test's length: incr's TTL on creation.
        o = ("incr", b"c%02d" % r.randrange(20), r.randrange(1, 5),
             1e6 if r.random() < 0.5 else None)
    elif x < 0.85:
        o = ("delete", k)
    elif x < 0.9:
        o = ("getdel", k)
    else:
        o = ("batch", [(b"b%02d" % r.randrange(40), b"%d" % i)
                       for _ in range(r.randrange(1, 4))])
    if client is None:
        return o
    if o[0] == "batch":
        half = 0x80 * (i % 2)
        return ("batch", [(bytes([0x10 + client + half]) + k, v) for k, v in o[1]])
    return (o[0], client_key(o[1], client)) + o[2:]


def client_key(key: bytes, client: int) -> bytes:
    """``key`` in client ``client``'s key space (see :func:`op`)."""
    return bytes([0x10 + client + 0x80 * (sum(key) % 2)]) + key


def client_prefixes(client: int) -> list[bytes]:
    """The two one-byte prefixes of client ``client``'s key space."""
    return [bytes([0x10 + client]), bytes([0x90 + client])]


def apply(db, o: tuple) -> None:
    if o[0] == "put":
        db.put(o[1], o[2])
    elif o[0] == "add":
        db.add(o[1], o[2])
    elif o[0] == "incr":
        db.incr(o[1], o[2], o[3])
    elif o[0] in ("delete", "getdel"):
        getattr(db, o[0])(o[1])
    else:
        with db.batch() as b:
            for k, v in o[1]:
                b.put(k, v)


def model(m: Model, o: tuple) -> None:
    """Apply op ``o`` to model ``m`` (no TTL runs out here, so the time is 0)."""
    if o[0] == "put":
        m.put(o[1], o[2], None, 0.0)
    elif o[0] == "add":
        m.add(o[1], o[2], None, 0.0)
    elif o[0] == "incr":
        m.incr(o[1], o[2], 0.0, o[3])
    elif o[0] in ("delete", "getdel"):
        getattr(m, o[0])(o[1], 0.0)
    else:
        m.batch([("put", k, v, None) for k, v in o[1]], 0.0)


def last_acked(p, start: int) -> int:
    """Read the acknowledged op numbers a killed child wrote to its stdout pipe
    (4 bytes each, in order from ``start``); return the last (start - 1 if none)."""
    data = p.stdout.read()
    p.stdout.close()
    acked = [int.from_bytes(data[i:i + 4], "little") for i in range(0, len(data) - 3, 4)]
    assert acked == list(range(start, start + len(acked)))
    return start + len(acked) - 1


def expect(seed: int, m: dict, start: int, last: int,
           client: int | None = None) -> tuple[dict, dict]:
    """From model ``m`` before op ``start``: the model after op ``last``, and after
    the op in flight (``last + 1``)."""
    after = Model(m)
    for i in range(start, last + 1):
        model(after, op(seed, i, client))
    in_flight = after.copy()
    model(in_flight, op(seed, last + 1, client))
    return after.live(), in_flight.live()


def settle(got: dict, after: dict, in_flight: dict, last: int) -> tuple[dict, int]:
    """Assert ``got`` is ``after`` or ``in_flight``; return it and the next op number."""
    if got == after:
        return after, last + 1
    assert got == in_flight, (
        f"state matches neither the last acknowledged op {last} nor the one in flight;"
        f" missing={sorted(set(after) - set(got))[:5]}"
        f" wrong={[k for k in got if after.get(k) not in (None, got[k])][:5]}")
    return in_flight, last + 2
