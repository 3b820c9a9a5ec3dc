"""stream_sockets.Frames over a real socket pair: what the publisher sends at once and what the
handler sends after it reach the client whole and in order."""
import socket
import threading

import pytest

from userservice import stream_sockets


@pytest.fixture
def pair():
    """(server side, client side); the server side never blocks, as under gevent."""
    server, client = socket.socketpair()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    server.setblocking(False)
    yield server, client
    server.close()
    client.close()


def read_exactly(sock, size):
    received = bytearray()
    while len(received) < size:
        received += sock.recv(size - len(received))
    return bytes(received)


def test_frames_send_now_sends_what_fits_at_once(pair):
    server, client = pair
    frames = stream_sockets.Frames(server)
    assert frames.send_now(b"one") and frames.send_now(b"two")
    assert frames.unsent == b"" and read_exactly(client, 6) == b"onetwo"


def test_frames_rest_of_a_partial_send_goes_before_the_next_frame(pair):
    server, client = pair
    frames, big = stream_sockets.Frames(server), bytes(range(256)) * 4096  # 1 MB: more than the buffers
    assert frames.send_now(big)  # taken: a part now, the rest left for the handler
    assert frames.unsent and not frames.send_now(b"later")  # nothing jumps the queue
    received = []
    reading = threading.Thread(target=lambda: received.append(read_exactly(client, len(big) + 5)))
    reading.start()
    server.setblocking(True)  # the handler's send waits for room, as gevent's does
    frames.send(b"after")
    reading.join(10)
    assert received == [big + b"after"] and frames.unsent == b""


def test_frames_send_now_refuses_a_full_socket_and_while_the_handler_sends(pair):
    server, client = pair
    frames = stream_sockets.Frames(server)
    while frames.send_now(b"x" * 65536) and not frames.unsent:
        pass  # fill the buffers
    frames.unsent = b""
    assert not frames.send_now(b"more")  # full: the kernel takes nothing
    read_exactly(client, 4096)
    with frames.sending:  # the handler is mid-send
        assert not frames.send_now(b"more")


def test_frames_publisher_side_wakes_the_handler_only_for_a_rest(pair):
    server, client = pair
    woken = threading.Event()
    deliver = stream_sockets.Frames(server).publisher_side(woken, lambda event: event.websocket)

    class Event:
        websocket = b"small"

    assert deliver(Event) and not woken.is_set()
    Event.websocket = b"y" * (1 << 20)
    assert deliver(Event) and woken.is_set()


def test_stream_sockets_owned_only_under_gevent():
    """The tests run without gevent: a gunicorn gevent worker is where handlers own theirs."""
    assert not stream_sockets.owned(socket.socket())
