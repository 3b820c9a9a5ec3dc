"""The change feed of one process: a listener follows the change log and a hub fans each
committed state out to this process's subscribers.

The change log in the database is the source of truth; the listener reads every row after
the last seq it has seen, so a wake-up that is missed or arrives late loses nothing. The hub
holds bounded queues: a slow subscriber is marked lagging instead of blocking the others or
the listener, and its handler decides what it is told instead (see api/stream.py).
"""
import collections
import functools
import logging
import threading

from flask import current_app

from . import commits, db, store
from .errors import Problem

log = logging.getLogger(__name__)

CLOSED = object()  # what `Subscription.next` returns once the hub has shut down
CATCH_UP_SECONDS = 5  # how long a new subscriber waits for the listener to reach the log's end
RETRY_SECONDS = 1  # pause before the listener tries again after the database failed it
MAX_CLIENT_MESSAGE = 64 * 1024  # clients send nothing; a larger message closes their WebSocket


class Unavailable(Problem):
    """No stream now (full, shutting down, or the feed is not following the log): retry later."""

    def __init__(self, detail):
        super().__init__(503, detail, headers={"Retry-After": "5"})


class Event(collections.namedtuple("Event", "seq state")):
    """One committed state as every subscriber receives it: the same object, its JSON and its
    Server-Sent Events frame encoded once, however many subscribers send it."""

    def __new__(cls, seq, state):
        event = super().__new__(cls, seq, state)
        event.sse = ("id: %d\ndata: %s\n\n" % (seq, state)).encode()
        return event


class Subscription:
    """One subscriber's view of the feed: the state it started from, then changes in order.

    Exactly one handler consumes it; the hub's publishing thread produces into it.
    """

    def __init__(self, seq, state, size):
        self.seq, self.state = seq, state  # the starting point
        self.size = size
        self.events = collections.deque()
        self.arrived = threading.Event()
        self.lagging = False  # set once a change did not fit: the subscriber has missed it
        self.closed = False

    def offer(self, event):
        if len(self.events) >= self.size:
            self.lagging = True
        else:
            self.events.append(event)
        self.arrived.set()

    def end(self):
        self.closed = True
        self.arrived.set()

    def next(self, timeout):
        """The next Event, None after `timeout` seconds without one (or once
        lagging), CLOSED when the hub has shut down."""
        if not (self.events or self.closed or self.lagging):
            self.arrived.wait(timeout)
            self.arrived.clear()  # an offer racing this clear has already appended its event
        if self.closed:
            return CLOSED
        return self.events.popleft() if self.events else None


class Hub:
    """This process's subscribers and the latest (seq, state) the listener has read."""

    def __init__(self):
        self.lock = threading.Lock()
        self.moved = threading.Condition(self.lock)
        self.subscribers = set()
        self.latest = None  # (seq, state) as of the last change read
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

    def subscribe(self, size, limit):
        with self.lock:
            if self.closed:
                raise Unavailable("This server is shutting down; connect again.")
            if len(self.subscribers) >= limit:
                raise Unavailable("This server holds as many streams as it may; try again shortly.")
            subscription = Subscription(*self.latest, size)
            self.subscribers.add(subscription)
            return subscription

    def resubscribe(self, subscription):
        """A fresh subscription from the latest state, for a subscriber that fell behind."""
        with self.lock:
            self.subscribers.discard(subscription)
            fresh = Subscription(*self.latest, subscription.size)
            if self.closed:
                fresh.end()
            else:
                self.subscribers.add(fresh)
            return fresh

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
                subscription.end()
            self.subscribers.clear()


class Listener:
    """One per process: wakes on local commits, on PostgreSQL NOTIFY, or after a poll interval,
    and publishes what the log holds after the last seq it read."""

    def __init__(self, hub, poll_interval):
        self.hub = hub
        self.poll_interval = poll_interval
        self.wakeup = threading.Event()
        self.thread = None
        self.start_lock = threading.Lock()
        self.seq = None  # the last seq read from the log
        self.stopping = False

    def wake(self):
        self.wakeup.set()

    def stop(self):
        """Ask the listener to end every stream and stop. Takes none of the hub's locks, so
        a signal handler may call it whatever the interrupted code holds."""
        self.stopping = True
        self.wakeup.set()

    def close(self, timeout=5):
        """Stop and wait for the thread: an app being discarded must not leave it reading
        the shared database proxy after that is bound elsewhere."""
        self.stop()
        if self.thread is not None:
            self.thread.join(timeout)

    def ensure_started(self):
        with self.start_lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self.run, name="userservice-feed", daemon=True)
                self.thread.start()

    def run(self):
        while not self.stopping:
            try:
                self.follow()
            except Exception:  # the database went away: the log is still there when it returns
                log.exception("the change feed failed; reading the log again in %ss", RETRY_SECONDS)
                self.wakeup.wait(RETRY_SECONDS)
        self.hub.close()

    def follow(self):
        with db.change_waiter(self.wakeup, self.poll_interval) as wait:
            while not self.stopping:
                self.catch_up()
                wait()

    def catch_up(self):
        """Publish every streamed change after the last seq read."""
        if self.seq is None:
            self.restart()
            return
        last = store.last_seq()
        if last <= self.seq:
            return
        changes = store.changes_after(self.seq, up_to=last)
        # Read after the changes: the log is pruned from its old end only, so an oldest row at
        # or before seq + 1 now proves that nothing after seq was missing when they were read.
        _, oldest, _ = store.log_position()
        if oldest is None or oldest > self.seq + 1:
            log.warning("the change log was pruned past this process's feed; announcing the "
                        "current state (raise CHANGE_LOG_KEEP)")
            self.restart()
            return
        for change_seq, state in changes:
            self.hub.publish(change_seq, state)
        self.hub.advance(last)
        self.seq = last

    def restart(self):
        """Start again from the current state, announced to every subscriber."""
        seq, _oldest, state = store.log_position()
        self.hub.publish(seq, state)
        self.seq = seq


def init_app(app):
    """Give the app its own hub and listener, created in the process that serves it (after
    gevent has patched threading, when gunicorn forks workers from a master)."""
    listener = Listener(Hub(), app.config["STREAM_POLL_INTERVAL"])
    app.extensions["userservice.feed"] = listener
    app.config.setdefault("SOCK_SERVER_OPTIONS", {
        "ping_interval": app.config["STREAM_PING_INTERVAL"],
        "max_message_size": MAX_CLIENT_MESSAGE,
        # A reader thread waits for a peer that may never answer; it must not hold a gthread
        # worker's exit (threading.Thread is looked up here, after gevent has patched it).
        "thread_class": functools.partial(threading.Thread, daemon=True),
    })
    commits.on_commit = listener.wake


def feed():
    return current_app.extensions["userservice.feed"]


def subscribe():
    """A new subscription that starts from everything committed before this call: a
    subscriber that connects after a write was acknowledged, by any process, starts with it."""
    listener = feed()
    listener.ensure_started()
    committed = store.last_seq()
    listener.wake()
    if not listener.hub.wait_until(committed, CATCH_UP_SECONDS):
        raise Unavailable("The change feed is not following the database; try again shortly.")
    config = current_app.config
    return listener.hub.subscribe(config["STREAM_QUEUE_SIZE"], config["STREAM_MAX_SUBSCRIBERS"])
