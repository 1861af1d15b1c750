"""Django sessions (SESSION_ENGINE = "django.contrib.sessions.backends.cache") on
FuseDBCache, shared between processes: what one process saves another loads;
expiry, cycle_key and the atomic create (CreateError) hold across them.
Django's own session tests run in test_sessions_contract.py."""

from __future__ import annotations

import time

import pytest
from django.contrib.sessions.backends.base import CreateError, UpdateError
from django.contrib.sessions.backends.cache import SessionStore

from adapters.django.helpers import run_child


@pytest.fixture
def session():
    s = SessionStore()
    yield s
    s.delete()


def test_saved_here_loads_in_another_process(session):
    session["user"] = 42
    session["cart"] = ["a", "b"]
    session.save()
    got = run_child("session-load", session.session_key)
    assert got == [{"data": {"user": 42, "cart": ["a", "b"]}, "key": session.session_key}]


def test_saved_in_another_process_loads_here():
    key = run_child("session-create", '{"theme": "dark"}')
    s = SessionStore(key)
    try:
        assert s["theme"] == "dark"
        assert s.exists(key)
    finally:
        s.delete()
    assert not SessionStore().exists(key)


def test_expiry_seen_by_another_process(session):
    """A session saved with set_expiry(1) is gone for another process after it
    expired (the load in-process first: a child's start may take over 1 s)."""
    session["x"] = 1
    session.set_expiry(1)
    session.save()
    key = session.session_key
    assert SessionStore(key).load() == {"x": 1, "_session_expiry": 1}
    time.sleep(1.5)
    [got] = run_child("session-load", key)
    assert got["data"] == {}
    assert got["key"] is None          # an unknown key is not reused (Django's rule)
    assert not session.exists(key)


def test_cycle_key_moves_the_data(session):
    session["x"] = "kept"
    session.save()
    old = session.session_key
    session.cycle_key()
    new = session.session_key
    assert new != old
    got_old, got_new = run_child("session-load", old, new)
    assert got_old["data"] == {}
    assert got_new["data"] == {"x": "kept"}


def test_must_create_on_a_taken_key_raises_create_error(session):
    session["owner"] = "first"
    session.create()
    other = SessionStore()
    other._session_key = session.session_key       # a colliding key, as create() may draw
    other["owner"] = "second"
    with pytest.raises(CreateError):
        other.save(must_create=True)
    assert SessionStore(session.session_key)["owner"] == "first"


def test_save_after_delete_elsewhere_raises_update_error(session):
    session["x"] = 1
    session.save()
    SessionStore(session.session_key).delete()
    session["x"] = 2
    with pytest.raises(UpdateError):
        session.save()


def test_flush_deletes_and_renews(session):
    session["x"] = 1
    session.save()
    old = session.session_key
    session.flush()
    assert not session.exists(old)
    assert run_child("session-load", old)[0]["data"] == {}
