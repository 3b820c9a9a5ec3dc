"""The change feed of one process: a listener follows the change log and a hub fans each
committed state out to this process's subscribers.

The change log in the database is the source of truth; the listener reads every row after
the last seq it has seen, so a wake-up that is missed or arrives late loses nothing. The hub
holds bounded queues: a slow subscriber is marked lagging instead of blocking the others.
"""
import queue
import threading

from flask import current_app

from . import db, store

CLOSED = object()  # queued to every subscriber when the hub shuts down


class Subscription:
    """One subscriber's view of the feed: the state it started from, then changes in order."""

    def __init__(self, seq, state, size):
        self.seq, self.state = seq, state  # the starting point
        self.queue = queue.Queue(size)
        self.lagging = False

    def offer(self, event):
        try:
            self.queue.put_nowait(event)
        except queue.Full:
            self.lagging = True

    def next(self, timeout):
        """The next (seq, state) change, None on timeout, CLOSED when the hub shuts down."""
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None


class Hub:
    def __init__(self):
        self.lock = threading.Lock()
        self.subscribers = set()
        self.latest = None  # (seq, state) as of the last change published
        self.ready = threading.Event()
        self.closed = False

    def start_from(self, seq, state):
        with self.lock:
            self.latest = (seq, state)
        self.ready.set()

    def publish(self, seq, state):
        """Deliver one committed state to every subscriber, under the lock so a new
        subscriber either starts after it or receives it: never both, never neither."""
        with self.lock:
            self.latest = (seq, state)
            for subscription in self.subscribers:
                subscription.offer((seq, state))

    def advance(self, seq):
        """Record that changes up to seq were read, though none of them was streamed."""
        with self.lock:
            self.latest = (seq, self.latest[1])

    def subscribe(self, size):
        with self.lock:
            subscription = Subscription(*self.latest, size)
            self.subscribers.add(subscription)
            return subscription

    def unsubscribe(self, subscription):
        with self.lock:
            self.subscribers.discard(subscription)

    def count(self):
        return len(self.subscribers)

    def close(self):
        """End every stream, so a graceful shutdown does not wait for clients to leave."""
        with self.lock:
            self.closed = True
            for subscription in self.subscribers:
                subscription.queue.put(CLOSED)


class Listener:
    """One per process: wakes on local commits, on PostgreSQL NOTIFY, or after a poll interval."""

    def __init__(self, hub, poll_interval):
        self.hub = hub
        self.poll_interval = poll_interval
        self.wakeup = threading.Event()
        self.thread = None
        self.start_lock = threading.Lock()

    def wake(self, seq=None):
        self.wakeup.set()

    def ensure_started(self):
        with self.start_lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self.run, name="userservice-feed", daemon=True)
                self.thread.start()
        self.hub.ready.wait()

    def run(self):
        seq, _oldest, state = store.log_position()
        self.hub.start_from(seq, state)
        with db.change_waiter(self.wakeup, self.poll_interval) as wait:
            while not self.hub.closed:
                wait()
                seq = self.catch_up(seq)

    def catch_up(self, seq):
        """Publish every streamed change after seq; returns the last seq read."""
        last = store.last_seq()
        for change_seq, state in store.changes_after(seq, up_to=last):
            self.hub.publish(change_seq, state)
        if last > seq:
            self.hub.advance(last)
        return max(seq, last)


def init_app(app):
    """Give the app its own hub and listener, created in the process that serves it (after
    gevent has patched threading, when gunicorn forks workers from a master)."""
    listener = Listener(Hub(), app.config["STREAM_POLL_INTERVAL"])
    app.extensions["userservice.feed"] = listener
    app.config.setdefault("SOCK_SERVER_OPTIONS", {"ping_interval": app.config["STREAM_PING_INTERVAL"]})
    store.on_commit = listener.wake


def feed():
    return current_app.extensions["userservice.feed"]


def subscribe():
    """A new subscription, starting this process's listener on first use."""
    listener = feed()
    listener.ensure_started()
    return listener.hub.subscribe(current_app.config["STREAM_QUEUE_SIZE"])
