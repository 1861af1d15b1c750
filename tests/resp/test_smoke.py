"""The fixtures of tests/resp/conftest.py work on both targets: the first
commands of a connection (HELLO on RESP3, PING, ECHO) through redis-py."""


def test_a_client_of_each_target_pings_and_echoes(target):
    assert target.r.ping() is True
    assert target.r.echo(b"x\r\ny") == b"x\r\ny"
    with target.raw() as s:
        s.sendall(b"*2\r\n$4\r\nPING\r\n$2\r\nhi\r\n")
        assert s.recv(100) == b"$2\r\nhi\r\n"
