"""The hub of one app: its stream subscribers, and each committed state fanned out to them.

The change log's follower (changelog.py) publishes every state it reads. Each subscriber has
a bounded queue: one that falls behind is marked lagging instead of blocking the others or
the follower, and its handler decides what it is told instead (see api/stream.py).
"""
import collections
import logging
import struct
import threading
import time

from .problems import ServiceUnavailable

log = logging.getLogger(__name__)

CLOSED = object()  # what `Subscription.next` returns once the hub has shut down
GONE = object()  # what `Subscription.next` returns once the subscriber's client was found gone
KEEP_ALIVE = object()  # what `Subscription.next` returns when a heartbeat is due (`Hub.beat`)
RETRY_SECONDS = 5  # what a refused subscriber is told to wait
BEAT_SLICES = 10  # Heartbeat beats a kind's subscribers in this many turns per interval


def never_gone():
    """The peer check of a subscriber whose connection cannot be asked (in-process clients)."""
    return False


def websocket_frame(text):
    """One unfragmented, unmasked WebSocket text frame (RFC 6455 section 5.2), as a server
    sends it without extensions (permessage-deflate is not negotiated, see api/stream.py)."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload


class Event(collections.namedtuple("Event", "seq state")):
    """One committed state as every subscriber receives it: the same object, its JSON, its
    Server-Sent Events frame and its WebSocket frame encoded once, however many subscribers
    send it."""

    def __new__(cls, seq, state):
        event = super().__new__(cls, seq, state)
        event.sse = ("id: %d\ndata: %s\n\n" % (seq, state)).encode()
        event.websocket = websocket_frame(state)
        return event


class Subscription:
    """One subscriber's view of the feed: the state it started from, then changes in order.

    Exactly one handler consumes it; the hub's publishing thread produces into it.
    `peer_gone` tells whether its client has gone (see peers.py). `arrived` wakes the handler;
    its connection may set it too (a WebSocket's client message or close), and a subscription
    that replaces a lagging one keeps it.
    """

    def __init__(self, seq, state, size, peer_gone=never_gone, arrived=None, beats=None, direct=None):
        self.seq, self.state = seq, state  # the starting point
        self.size = size
        self.peer_gone = peer_gone
        self.beats = beats  # the kind of beat it is sent (Heartbeat), if any
        self.direct = direct  # delivers an Event without the handler, when it can (see offer)
        self.beat_due = False
        self.beat_slice = 0  # which of Heartbeat's turns beats it
        self.events = []  # an empty deque costs ~600 bytes, an empty list 56; few are long
        self.arrived = threading.Event() if arrived is None else arrived
        self.lagging = False  # set once a change did not fit: the subscriber has missed it
        self.closed = False
        self.dropped = False  # set once its client was found gone

    def offer(self, event):
        """Queue the event for the handler and wake it; or, with nothing queued, have `direct`
        deliver it (the publisher-side write of a parked stream, parked_streams.py), when it can."""
        if self.direct is not None and not self.events and self.direct(event):
            return
        if len(self.events) >= self.size:
            self.lagging = True
        else:
            self.events.append(event)
        self.arrived.set()

    def end(self):
        self.closed = True
        self.arrived.set()

    def keep_alive(self):
        self.beat_due = True
        self.arrived.set()

    def drop(self):
        self.dropped = True
        self.arrived.set()

    def next(self, timeout=None):
        """The next Event; KEEP_ALIVE when a heartbeat is due and no Event is; None after
        `timeout` seconds without either (None: no timeout), once lagging, or when woken by
        the connection; CLOSED when the hub has shut down, GONE once the client was found gone."""
        if not (self.events or self.closed or self.lagging or self.dropped or self.beat_due):
            self.arrived.wait(timeout)
            self.arrived.clear()  # an offer racing this clear has already appended its event
        if self.dropped:
            return GONE
        if self.closed:
            return CLOSED
        if self.events:
            return self.events.pop(0)
        if self.beat_due:
            self.beat_due = False
            return KEEP_ALIVE
        return None


class Heartbeat:
    """One timer for every subscriber that is sent beats, instead of one per subscriber: a
    thread that beats each kind (Server-Sent Events' keep-alive comments, WebSocket pings)
    until stopped, whatever the database does meanwhile. Every subscriber of a kind is beaten
    once every `intervals[kind]` seconds, a `BEAT_SLICES`th of them at a time, so that ten
    thousand pings do not hold a worker all at once."""

    def __init__(self, hub, intervals):
        self.hub = hub
        self.intervals = {kind: interval / BEAT_SLICES for kind, interval in intervals.items()}
        self.stopped = threading.Event()
        self.thread = None

    def start(self):
        self.thread = threading.Thread(target=self.run, name="userservice-heartbeat", daemon=True)
        self.thread.start()

    def run(self):
        due = {kind: time.monotonic() + interval for kind, interval in self.intervals.items()}
        ticks = dict.fromkeys(due, 0)
        while True:
            kind = min(due, key=due.get)
            if self.stopped.wait(max(0, due[kind] - time.monotonic())):
                return
            self.hub.beat(kind, ticks[kind] % BEAT_SLICES)
            ticks[kind] += 1
            due[kind] = max(due[kind] + self.intervals[kind], time.monotonic())

    def stop(self):
        """Takes no lock: a signal handler may call it."""
        self.stopped.set()

    def join(self, timeout):
        if self.thread is not None:
            self.thread.join(timeout)


class Hub:
    """This app's subscribers in this process, and the latest (seq, state) read from the log."""

    def __init__(self):
        self.lock = threading.Lock()
        self.moved = threading.Condition(self.lock)
        self.subscribers = set()
        self.watchers = set()  # streams fed no changes (the health stream), limited and ended alike
        self.latest = None  # (seq, state) as of the last change read
        self.subscribed = 0  # subscriptions made, which deals them out to Heartbeat's turns
        self.closed = False

    def publish(self, seq, state):
        """Deliver one committed state to every subscriber, under the lock so a new
        subscriber either starts after it or receives it: never both, never neither."""
        event = Event(seq, state)
        with self.lock:
            self.latest = (seq, state)
            for subscription in self.subscribers:
                subscription.offer(event)
            self.moved.notify_all()

    def beat(self, kind, beat_slice=None):
        """A beat for the subscribers that are sent this kind, of one slice of them or all
        (see Heartbeat)."""
        with self.lock:
            for subscription in self.subscribers:
                if subscription.beats == kind and beat_slice in (None, subscription.beat_slice):
                    subscription.keep_alive()

    def advance(self, seq):
        """Record that changes up to seq were read, though none of them was streamed."""
        with self.lock:
            self.latest = (seq, self.latest[1])
            self.moved.notify_all()

    def wait_until(self, seq, timeout):
        """Whether the hub has read the log up to seq within timeout seconds."""
        with self.lock:
            return self.moved.wait_for(lambda: self.latest is not None and self.latest[0] >= seq,
                                       timeout)

    def subscribe(self, size, limit, peer_gone=never_gone, beats=None):
        self.make_room(limit)
        with self.lock:
            self.refuse_when_full(limit)
            subscription = Subscription(*self.latest, size, peer_gone, beats=beats)
            subscription.beat_slice, self.subscribed = self.subscribed % BEAT_SLICES, self.subscribed + 1
            self.subscribers.add(subscription)
            return subscription

    def check_room(self, limit):
        """Raise what `subscribe` would raise now, without subscribing (HEAD asks this)."""
        self.make_room(limit)
        with self.lock:
            self.refuse_when_full(limit)

    def watch(self, limit):
        """A stream that is fed no changes: it counts against the limit and ends, like every
        subscription, when the hub closes (`next` then returns CLOSED)."""
        self.make_room(limit)
        with self.lock:
            self.refuse_when_full(limit)
            watcher = Subscription(None, None, 0)
            self.watchers.add(watcher)
            return watcher

    def refuse_when_full(self, limit):
        """With the lock held: 503 when shutting down or at the limit."""
        if self.closed:
            raise ServiceUnavailable("This server is shutting down; connect again.", RETRY_SECONDS)
        if len(self.subscribers) + len(self.watchers) >= limit:
            raise ServiceUnavailable("This server holds as many streams as it may; try again "
                                     "shortly.", RETRY_SECONDS)

    def make_room(self, limit):
        """At the limit, free the slots of subscribers whose clients have gone (a closed
        Server-Sent Events client is otherwise noticed only when a write fails), so a full
        server never turns a newcomer away for the dead. Their handlers are woken to end.
        The peers are asked outside the lock: publishing goes on meanwhile."""
        with self.lock:
            if len(self.subscribers) + len(self.watchers) < limit:
                return
            subscribers = list(self.subscribers)
        gone = [subscription for subscription in subscribers if subscription.peer_gone()]
        with self.lock:
            for subscription in gone:
                self.subscribers.discard(subscription)
                subscription.drop()
        if gone:
            log.info("freed %d stream slots whose clients had gone", len(gone))

    def resubscribe(self, subscription):
        """A fresh subscription from the latest state, for a subscriber that fell behind."""
        with self.lock:
            self.subscribers.discard(subscription)
            fresh = Subscription(*self.latest, subscription.size, subscription.peer_gone, subscription.arrived,
                                 subscription.beats, subscription.direct)
            fresh.beat_slice = subscription.beat_slice  # a ping is still an interval after the last
            if self.closed:
                fresh.end()
            else:
                self.subscribers.add(fresh)
            return fresh

    def unsubscribe(self, subscription):
        with self.lock:
            self.subscribers.discard(subscription)
            self.watchers.discard(subscription)

    def close(self):
        """End every stream, so a graceful shutdown does not wait for clients to leave."""
        with self.lock:
            self.closed = True
            for subscription in self.subscribers | self.watchers:
                subscription.end()
            self.subscribers.clear()
            self.watchers.clear()
