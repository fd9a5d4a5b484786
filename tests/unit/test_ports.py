"""Ports no other process can take: ``support.free_port`` (a server's port, parked in TIME_WAIT),
``support.closed_port`` (nothing listens, held until the test process ends) and the MLflow
server helper starting again on another port when its port was taken first."""

from __future__ import annotations

import errno
import socket

import pytest

import support
from support import closed_port, free_port
from support.mlflow_server import answers, start_server


def _bind(port: int, reuse: bool) -> socket.socket:
    s = socket.socket()
    if reuse:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        raise
    return s


def test_free_port_is_kept_from_other_binds_but_a_server_can_bind_it():
    port = free_port()
    with pytest.raises(OSError) as e:
        _bind(port, reuse=False).close()       # what any other bind(0)/plain bind meets
    assert e.value.errno == errno.EADDRINUSE
    server = _bind(port, reuse=True)             # a server binding it by number (SO_REUSEADDR)
    server.listen(1)
    server.close()


def test_closed_port_refuses_connections_and_nobody_can_listen_there():
    port = closed_port()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    for reuse in (False, True):
        with pytest.raises(OSError) as e:
            _bind(port, reuse=reuse).listen(1)
        assert e.value.errno == errno.EADDRINUSE


@pytest.mark.slow  # two mlflow server starts
def test_mlflow_server_whose_port_was_taken_starts_on_another(tmp_path, monkeypatch):
    thief = socket.socket()                      # another process got there first
    thief.bind(("127.0.0.1", 0))
    thief.listen(1)
    taken = thief.getsockname()[1]
    ports = iter([taken])
    monkeypatch.setattr(support, "free_port", lambda: next(ports, None) or free_port())
    servers = start_server(tmp_path)
    try:
        server = next(servers)
        assert not server.uri.endswith(f":{taken}")
        assert answers(f"{server.uri}/health")
    finally:
        servers.close()
        thief.close()
