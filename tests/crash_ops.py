"""A deterministic operation sequence shared by the crash child and its checker:
op(seed, i) is the i-th operation; apply() runs it on a database and model() on a
dict, so the parent can recompute exactly what any prefix of the run leaves."""

from __future__ import annotations

import random


def op(seed: int, i: int) -> tuple:
    r = random.Random(seed * 1_000_003 + i)
    x = r.random()
    k = b"k%03d" % r.randrange(300)
    if x < 0.45:
        return ("put", k, b"%d:" % i + bytes(r.randrange(0, 60)))
    if x < 0.75:
        return ("incr", b"c%02d" % r.randrange(20), r.randrange(1, 5))
    if x < 0.9:
        return ("delete", k)
    return ("batch", [(b"b%02d" % r.randrange(40), b"%d" % i) for _ in range(r.randrange(1, 4))])


def apply(db, o: tuple) -> None:
    if o[0] == "put":
        db.put(o[1], o[2])
    elif o[0] == "incr":
        db.incr(o[1], o[2])
    elif o[0] == "delete":
        db.delete(o[1])
    else:
        with db.batch() as b:
            for k, v in o[1]:
                b.put(k, v)


def model(m: dict, o: tuple) -> None:
    if o[0] == "put":
        m[o[1]] = o[2]
    elif o[0] == "incr":
        m[o[1]] = b"%d" % (int(m.get(o[1], b"0")) + o[2])
    elif o[0] == "delete":
        m.pop(o[1], None)
    else:
        for k, v in o[1]:
            m[k] = v
