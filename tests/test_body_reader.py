"""body_reader.Watchdog on its own: a read not done in time has its connection's reading side
shut (so a blocked read returns at once), a read done in time is left alone. Reading bodies
through real servers, in every framing, is in test_guards.py."""
import socket
import time

import pytest

from userservice.body_reader import Watchdog


@pytest.fixture
def connection():
    server_side, client_side = socket.socketpair()
    yield server_side, client_side
    server_side.close()
    client_side.close()


def test_watchdog_ends_a_read_that_overruns_its_time(connection):
    server_side, _client_side = connection
    watchdog = Watchdog(0.2)
    started = time.monotonic()
    deadline = watchdog.watch(server_side)
    server_side.settimeout(5)
    assert server_side.recv(10) == b""  # blocked until the watchdog shut the reading side
    assert 0.2 <= time.monotonic() - started < 2
    assert watchdog.finished(deadline)
    watchdog.close()


def test_watchdog_leaves_a_read_done_in_time_alone(connection):
    server_side, client_side = connection
    watchdog = Watchdog(0.2)
    assert not watchdog.finished(watchdog.watch(server_side))
    late = watchdog.watch(server_side)  # a later read on the same connection, still running
    time.sleep(0.1)
    assert not watchdog.finished(late)
    time.sleep(0.4)
    client_side.sendall(b"x")
    assert server_side.recv(10) == b"x"
    watchdog.close()


@pytest.mark.parametrize("seconds", [0, None])
def test_watchdog_without_a_time_has_no_deadline(connection, seconds):
    server_side, _client_side = connection
    watchdog = Watchdog(seconds)
    deadline = watchdog.watch(server_side)
    assert watchdog.thread is None and not watchdog.finished(deadline)
