"""The fixtures of tests/resp/conftest.py work on both targets: the first
commands of a connection (HELLO on RESP3, PING, ECHO) through redis-py."""


def test_a_client_of_each_target_pings_and_echoes(target):
    assert target.r.ping() is True
    assert target.r.echo(b"x\r\ny") == b"x\r\ny"
    assert target.r.execute_command("PING", b"hi") == b"hi"
