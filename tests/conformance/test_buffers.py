"""Bytes-like values and keys (README, "Values and keys"): any object with the
buffer protocol is stored as ``memoryview(obj).tobytes()`` (its elements' raw
bytes, row-major) by every operation that takes a value, and names the key of
those bytes; a buffer of Python objects, a str value and a non-buffer are
refused with ValueTypeError (KeyTypeError as a key), nothing written."""

from __future__ import annotations

import array
import ctypes
import mmap

import numpy as np
import pytest

import fusedb

_F = np.arange(12, dtype=np.int16).reshape(3, 4)     # 24 bytes: a key too

#: name -> (object, the bytes it must be stored as, written out independently).
BUFFERS = {
    "numpy-uint8": (np.arange(10, dtype=np.uint8), bytes(range(10))),
    "numpy-float64": (np.array([1.5, -2.0]), b"\x00\x00\x00\x00\x00\x00\xf8?"
                      b"\x00\x00\x00\x00\x00\x00\x00\xc0"),
    "numpy-2d": (_F, b"".join(i.to_bytes(2, "little") for i in range(12))),
    "numpy-fortran": (np.asfortranarray(_F), b"".join(i.to_bytes(2, "little")
                                                      for i in range(12))),
    "numpy-strided": (np.arange(20, dtype=np.uint8)[::3], bytes(range(0, 20, 3))),
    "numpy-scalar": (np.float64(1.5), b"\x00\x00\x00\x00\x00\x00\xf8?"),
    "numpy-empty": (np.array([], dtype=np.uint8), b""),
    "array.array": (array.array("h", [1, -1]), b"\x01\x00\xff\xff"),
    "memoryview-int32": (memoryview(array.array("i", [7, 8])), b"\x07\0\0\0\x08\0\0\0"),
    "memoryview-strided": (memoryview(b"abcdef")[::2], b"ace"),
    "bytearray": (bytearray(b"ba\x00"), b"ba\x00"),
    "ctypes": ((ctypes.c_uint16 * 2)(1, 2), b"\x01\x00\x02\x00"),
}
NON_BUFFERS = {"str": "text", "int": 7, "float": 1.5, "None": None, "list": [1, 2],
               "object-array": np.array([1, "a"], dtype=object),
               "object-field": np.zeros(2, dtype=[("n", "i4"), ("o", "O")])}


def _every_write(db, obj) -> list[bytes]:
    """``obj`` written by each operation that takes a value; the keys."""
    db.put(b"put", obj)
    db[b"setitem"] = obj
    db.put(b"put-get", obj, get=True)
    db.add(b"add", obj)
    db.update(b"update", lambda _cur: obj)
    with db.batch() as b:
        b.put(b"batch-put", obj)
        b.update(b"batch-update", lambda _cur: obj)
    db.transact(lambda tx: tx.put(b"tx-put", obj), [b"tx-put"])
    return [b"put", b"setitem", b"put-get", b"add", b"update", b"batch-put",
            b"batch-update", b"tx-put"]


@pytest.mark.parametrize("name", BUFFERS)
def test_a_buffer_value_is_stored_as_its_bytes(db, name):
    obj, want = BUFFERS[name]
    for k in _every_write(db, obj):
        got = db.get(k)
        assert type(got) is bytes and got == want, (k, got)


def test_a_numpy_array_reads_back_with_frombuffer(db):
    a = np.linspace(0, 1, 7).reshape(7, 1)[::2]
    db[b"arr"] = a
    assert np.array_equal(np.frombuffer(db[b"arr"], a.dtype).reshape(a.shape), a)


@pytest.mark.parametrize("name", [n for n in BUFFERS if n != "numpy-empty"])
def test_a_buffer_key_names_its_bytes(db, name):
    obj, want = BUFFERS[name]
    db.put(obj, b"v")
    assert db.get(want) == b"v" and db[obj] == b"v" and obj in db
    assert list(db) == [want]
    assert db.delete(obj) and want not in db


def test_an_mmap_value_and_key_leave_no_buffer_held(db):
    with mmap.mmap(-1, 8) as m:
        m[:3] = b"abc"
        db.put(b"m", m)
        db.put(m, b"key-was-mmap")
        with db.batch() as b:
            b.put(b"mb", m)
        m.resize(16)                # BufferError if a view of it were still held
    assert db.get(b"m") == db.get(b"mb") == b"abc" + bytes(5)
    assert db.get(b"abc" + bytes(5)) == b"key-was-mmap"


@pytest.mark.parametrize("name", NON_BUFFERS)
def test_non_buffers_and_object_buffers_are_refused(db, name):
    obj = NON_BUFFERS[name]
    writes = [lambda: db.put(b"k", obj), lambda: db.put(b"k", obj, nx=True),
              lambda: db.batch().put(b"k", obj),
              lambda: db.transact(lambda tx: tx.put(b"k", obj), [b"k"])]
    if obj is not None:                     # update's fn returning None deletes
        writes.append(lambda: db.update(b"k", lambda _cur: obj))
    for write in writes:
        with pytest.raises(fusedb.ValueTypeError):
            write()
    if name != "str":
        with pytest.raises(fusedb.KeyTypeError):
            db.put(obj, b"v")
    assert list(db) == []


def test_a_str_value_error_says_to_encode(db):
    with pytest.raises(fusedb.ValueTypeError, match=r"encode"):
        db.put(b"k", "text")


def test_size_limit_counts_bytes_not_elements(db, access):
    limit = access.opts["max_value_size"]
    items = limit // 4 + 1                  # fewer elements than the limit, more bytes
    with pytest.raises(fusedb.ValueTooLargeError):
        db.put(b"k", np.zeros(items, dtype=np.int32))
    with pytest.raises(fusedb.ValueTooLargeError):
        db.put(b"k", memoryview(array.array("i", bytes(4 * items))))
    db.put(b"k", np.zeros(limit // 8, dtype=np.float64))
    assert db.get(b"k") == bytes(limit // 8 * 8)
