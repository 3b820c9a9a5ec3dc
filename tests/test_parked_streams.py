"""parked_streams.py over real loopback connections and gevent's loop (unpatched: the parked side runs
in greenlets of this thread): whatever the publisher, the beats and a slow client do, a
parked stream sends its first bytes, then every change whole and in order, without a gap,
until it ends; and a client that leaves gives its slot back at once."""
import re
import socket

import gevent
import gevent.socket
from hypothesis import example, given, settings, strategies as st

from userservice.event_stream import KEEP_ALIVE_COMMENT
from userservice.hub import Hub
from userservice.metrics import Metrics
from userservice.parked_streams import ParkedStreams

FIRST = b"HTTP/1.1 200 OK\r\n\r\nretry: 2000\n\n"
SMALL_BUFFER = 4096  # the kernel's least: a few events fill it
EVENT = re.compile(rb"id: (\d+)\ndata: (.*)\n\n")


def parked_sse(queue_size=16):
    """A hub, its parked streams, one parked Server-Sent Events stream and its client."""
    hub = Hub()
    hub.publish(0, "null")
    metrics = Metrics()
    streams = ParkedStreams(hub, metrics, 64 * 1024)
    server, client = tcp_pair()
    metrics.stream_opened("sse")  # as the view does
    streams.park(server, hub.subscribe(queue_size, 100, beats="sse"), "sse", FIRST)
    server.close()  # as gunicorn closes its own socket once the request returns
    client.settimeout(0.2)
    return hub, streams, metrics, client


def tcp_pair():
    """A loopback TCP connection with small buffers (where the kernel takes part of a write)."""
    with gevent.socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = gevent.socket.socket()
        for side in (listener, client):  # an accepted socket inherits the listener's
            side.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
            side.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
        client.connect(listener.getsockname())
        server, _address = listener.accept()
    return server, client


def read_some(client, size):
    try:
        return client.recv(size)
    except TimeoutError:
        return b""


def read_to_end(client):
    received = b""
    while chunk := client.recv(65536):
        received += chunk
    return received


def open_streams(metrics):
    return metrics.registry.get_sample_value("userservice_streams_open", {"protocol": "sse"})


actions = st.lists(st.one_of(
    st.tuples(st.just("publish"), st.integers(1, 3000)),  # a state of this many bytes
    st.tuples(st.just("burst"), st.integers(2, 10)),  # this many 2.5 KB states at once: the kernel
    # takes a part of one (the rest must go first), refuses the next (queued)
    st.tuples(st.just("read"), st.integers(1, 20000)),
    st.tuples(st.just("beat"), st.just(0)),
    st.tuples(st.just("yield"), st.just(0))), max_size=40)


@settings(deadline=None)
@example(actions=[("yield", 0), ("burst", 10)])
@given(actions=actions)
def test_parked_stream_sends_every_change_whole_in_order_until_it_ends(actions):
    hub, streams, metrics, client = parked_sse()
    received, published = b"", []
    for action, number in actions:
        if action in ("publish", "burst"):
            for size in [number] if action == "publish" else [2500] * number:
                published.append('"%s"' % ("x" * size))
                hub.publish(len(published), published[-1])
        elif action == "read":
            received += read_some(client, number)
        elif action == "beat":
            hub.beat("sse")
        else:
            gevent.sleep(0)
    while len(EVENT.findall(received)) < len(published):  # what is pending arrives, or the end
        chunk = client.recv(65536)  # a stall times out (TimeoutError): a change held back
        if not chunk:
            break
        received += chunk
    hub.close()
    received += read_to_end(client)
    assert received.startswith(FIRST)
    body = received[len(FIRST):].replace(KEEP_ALIVE_COMMENT, b"")
    events = EVENT.findall(body)
    assert b"".join(b"id: %s\ndata: %s\n\n" % event for event in events) == body, "a torn event"
    seqs = [int(seq) for seq, _state in events]
    assert seqs == list(range(1, len(seqs) + 1)), "a gap or a change out of order"
    assert [state.decode() for _seq, state in events] == published[:len(seqs)]
    lagged = metrics.registry.get_sample_value("userservice_streams_lagged_total", {"protocol": "sse"})
    assert len(seqs) == len(published) or lagged == 1  # only a lagging stream stops short
    assert not streams.open and open_streams(metrics) == 0 and not hub.subscribers
    client.close()


def test_parked_stream_whose_client_leaves_gives_its_slot_back_at_once():
    hub, streams, metrics, client = parked_sse()
    assert read_some(client, 65536) == FIRST
    assert len(streams.open) == 1 and open_streams(metrics) == 1
    client.close()
    with gevent.Timeout(2):
        while streams.open:
            gevent.sleep(0.01)
    assert not hub.subscribers and open_streams(metrics) == 0
