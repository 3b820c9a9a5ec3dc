"""`/user/stream` connections under gevent, held without a greenlet while they idle.

Once a WebSocket's handshake is done, or a Server-Sent Events response's head and backlog are
ready, the connection is handed over here (`ParkedStreams.park`) and the request returns:
gunicorn's greenlet for it ends, with its saved stack, the Flask request context and the
request's objects. An idle subscriber keeps a duplicate of its socket (gunicorn closes its
own), its subscription, a watcher on gevent's loop and, for a WebSocket, a frame parser.

- The publisher sends a change itself when the kernel takes it at once (Frames.send_now).
- Anything else (a change that did not fit, a beat, the client's bytes, falling behind, the
  hub closing, the client found gone) wakes the subscriber: its `Wakeup` starts a greenlet
  that does everything pending, in order, and ends; never two at once for one subscriber.
- A WebSocket client is answered as simple-websocket's reader thread would: a ping with a
  pong, a close with a close, a message over `max_size` with 1009, a ping beat without a
  pong since the last with 1008. What a Server-Sent Events client sends is dropped, and
  its close ends the stream at once.

At shutdown the hub ends every subscription; the worker waits for the parked ones to say
goodbye and close (`join`, from server.worker_exit), as gunicorn waits for its handlers.
"""
import functools
import logging
import os
import threading

from simple_websocket import ConnectionClosed
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError

from . import peers
from .event_stream import KEEP_ALIVE_COMMENT
from .hub import CLOSED, GONE, KEEP_ALIVE, websocket_frame
from .stream_sockets import GOING_AWAY, GOING_AWAY_MESSAGE, RECEIVE_BYTES, Frames

log = logging.getLogger(__name__)


class ParkedStreams:
    """One app's parked subscribers."""

    def __init__(self, hub, metrics, max_message):
        self.hub, self.metrics = hub, metrics
        self.sides = {"websocket": functools.partial(WebSocketClient, max_size=max_message),
                      "sse": EventStreamClient}
        self.open = set()
        self.emptied = threading.Event()
        self.emptied.set()

    def park(self, sock, subscription, kind, first):
        """Take over a connection (gunicorn's socket) and its subscription. `kind` is
        "websocket" or "sse"; `first` what it is sent before any change."""
        sock = sock.dup()
        parked = ParkedStream(sock, subscription, self, self.sides[kind], first)
        self.open.add(parked)
        self.emptied.clear()
        parked.wakeup.set()

    def left(self, parked):
        self.open.discard(parked)
        self.metrics.stream_closed(parked.side.name)
        if not self.open:
            self.emptied.set()

    def join(self, timeout):
        """Whether every parked subscriber ended within `timeout` seconds (after the hub closed)."""
        return self.emptied.wait(timeout)


class Wakeup:
    """A parked subscriber's stand-in for its subscription's event (hub.Subscription.arrived):
    `set` starts a run unless one is under way, which then finds what woke it."""

    def __init__(self, run):
        self.run = run
        self.running = False

    def set(self):
        if not self.running:
            import gevent

            self.running = True
            gevent.spawn_raw(self.run)

    def wait(self, timeout=None):
        """A run never waits: it ends when nothing is pending."""
        return False

    def clear(self):
        pass


class ParkedStream:
    """One subscriber: its socket, its subscription, and what a run does for it."""

    def __init__(self, sock, subscription, park, side, first):
        self.park = park
        self.frames = Frames(sock)
        self.wakeup = Wakeup(self.run)
        self.side = side(self.frames, self.wakeup)
        self.subscription = subscription
        self.first = first
        subscription.arrived = self.wakeup
        subscription.peer_gone = functools.partial(peers.gone, sock)
        self.ended = False

    def run(self):
        try:
            if self.first is not None:
                self.start()
            while self.step():
                pass
        except (ConnectionClosed, OSError, LocalProtocolError):  # gone, or closed
            self.end()
        except Exception:  # a fault of ours: said in the log, and the slot is let go
            log.exception("a parked %s stream failed", self.side.name)
            self.end()
        finally:
            self.wakeup.running = self.ended  # an ended subscriber is never run again

    def start(self):
        """What it is sent first, then the publisher may write to it (not before: a change
        must not overtake the state it follows)."""
        first, self.first = self.first, None
        self.frames.send(first)
        self.subscription.direct = self.frames.publisher_side(self.wakeup, self.side.frame_of)

    def step(self):
        """Do the next thing pending: whether there may be more."""
        self.side.read()
        subscription = self.subscription
        event = subscription.next(0)
        if event is GONE or event is CLOSED:
            if event is CLOSED:
                self.frames.send(self.side.goodbye())
            self.end()
            return False
        if subscription.lagging:
            self.park.metrics.stream_lagged(self.side.name)
            if not self.side.resends_state:  # a Server-Sent Events client resumes by Last-Event-ID
                self.end()
                return False
            self.subscription = self.park.hub.resubscribe(subscription)
            self.frames.send(websocket_frame(self.subscription.state))
        elif event is KEEP_ALIVE:
            self.frames.send(self.side.beat())
        elif event is not None:
            self.frames.send(self.side.frame_of(event))
        elif self.frames.unsent:  # the rest of what the publisher sent goes first
            self.frames.send(b"")
        else:
            return self.side.readable
        return True

    def end(self):
        if self.ended:
            return
        self.ended = True
        self.side.close()
        self.park.hub.unsubscribe(self.subscription)
        self.frames.sock.close()
        self.park.left(self)


class Watched:
    """A client read when a watcher on gevent's loop says it sent something."""

    def __init__(self, frames, woken):
        import gevent

        self.frames, self.woken = frames, woken
        self.readable = False
        self.watcher = gevent.get_hub().loop.io(frames.sock.fileno(), 1)
        self.watcher.start(self.arrived)

    def arrived(self):
        """In gevent's loop: stop watching until read (the watcher is level-triggered), and
        wake the subscriber."""
        self.watcher.stop()
        self.readable = True
        self.woken.set()

    def receive(self):
        """What the client sent, None if nothing after all (a read never waits: the socket is
        non-blocking); raises ConnectionClosed once it has gone."""
        self.readable = False
        try:
            data = os.read(self.frames.sock.fileno(), RECEIVE_BYTES)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        if not data:
            raise ConnectionClosed(CloseReason.ABNORMAL_CLOSURE, None)
        return data

    def close(self):
        self.watcher.stop()
        self.watcher.close()


class EventStreamClient(Watched):
    """A Server-Sent Events client: it sends nothing after its request but its close."""

    name = "sse"
    resends_state = False

    @staticmethod
    def frame_of(event):
        return event.sse

    def read(self):
        if self.readable:
            self.receive()  # dropped
            self.watcher.start(self.arrived)

    def beat(self):
        return KEEP_ALIVE_COMMENT

    def goodbye(self):
        return b""


class WebSocketClient(Watched):
    """A WebSocket client, and what to answer it (wsproto's own frame parser, with no
    handshake state kept: no extension is negotiated, see api/stream.py)."""

    name = "websocket"
    resends_state = True  # one that fell behind is sent the latest state

    def __init__(self, frames, woken, max_size):
        super().__init__(frames, woken)
        self.max_size = max_size
        self.connection = Connection(ConnectionType.SERVER)
        self.message_size = 0
        self.closing = None  # (code, reason) once either side closed
        self.pong_received = True

    @staticmethod
    def frame_of(event):
        return event.websocket

    def read(self):
        """Take what the client sent, if anything, and answer it; raise ConnectionClosed once
        it has gone, or closed."""
        if not self.readable:
            return
        data = self.receive()
        if data is None:
            self.watcher.start(self.arrived)
            return
        try:
            self.connection.receive_data(data)
            reply = b"".join(self.answer(event) for event in self.connection.events())
        except LocalProtocolError:
            raise ConnectionClosed(CloseReason.PROTOCOL_ERROR, None)
        if reply:
            self.frames.send(reply)
        if self.closing is not None:
            raise ConnectionClosed(*self.closing)
        self.watcher.start(self.arrived)

    def answer(self, event):
        """What to send back for one event from the client."""
        if isinstance(event, CloseConnection):
            self.closing = event.code, event.reason
            return self.connection.send(event.response())
        if isinstance(event, Ping):
            return self.connection.send(event.response())
        if isinstance(event, Pong):
            self.pong_received = True
        elif isinstance(event, (TextMessage, BytesMessage)):
            size = self.message_size + len(event.data)
            if size > self.max_size:
                return self.close_frame(CloseReason.MESSAGE_TOO_BIG, "Message is too big")
            self.message_size = 0 if event.message_finished else size
        return b""

    def close_frame(self, code, message):
        self.closing = code, message
        return self.connection.send(CloseConnection(code, message))

    def goodbye(self):
        return self.close_frame(GOING_AWAY, GOING_AWAY_MESSAGE)

    def beat(self):
        """At the hub's ping beat: a ping, or the close of a client that did not answer the
        last one (raised once it is sent)."""
        if not self.pong_received:
            self.frames.send(self.close_frame(CloseReason.POLICY_VIOLATION, "Ping/Pong timeout"))
            raise ConnectionClosed(CloseReason.POLICY_VIOLATION, "Ping/Pong timeout")
        self.pong_received = False
        return self.connection.send(Ping())
