"""The change log, and how a commit reaches every subscriber.

1. A write (a job of the group commit, commits.py) holds the log's `Head`, the state row,
   locked for its transaction, and `record`s its change there: a `changes` row, in the same
   transaction as the change itself.
2. Before the transaction commits, `seal` saves the head, prunes the log and, on PostgreSQL,
   sends NOTIFY, which is delivered only if the transaction commits.
3. Once it has committed, the group commit calls the `on_commit` it was built with: this
   app's `Follower.wake`.
4. The app's Follower (a thread in each process) wakes on that, on NOTIFY from other
   processes and hosts, or on SQLite after a poll interval; it reads every change after the
   last seq it has seen (`read_after`, which also says when the log was pruned past it) and
   publishes them to the app's Hub, which fans each out to the subscribers (hub.py).

The log is the source of truth: a wake-up that is missed or arrives late loses nothing.
"""
import collections
import contextlib
import datetime
import logging
import threading

from peewee import JOIN, fn

from .feed_relay import RelayClient
from .listener import NOTIFY_CHANNEL, Announcement, NotificationListener, listener_params
from .problems import ServiceUnavailable

log = logging.getLogger(__name__)

PRUNE_EVERY = 100
RETRY_SECONDS = 1  # pause before the follower reads again after the database failed it
CATCH_UP_SECONDS = 5  # how long a new subscriber waits for the follower to reach the log's end


class Head:
    """The state row as a write transaction holds it: the last change's seq, who is current,
    and whether a change recorded in the transaction is streamed."""

    __slots__ = ("seq", "current", "log", "streamed")

    def __init__(self, seq, current, change_log):
        self.seq, self.current, self.log = seq, current, change_log
        self.streamed = False

    def record(self, kind, user_id, current=None):
        """Append a change in the transaction. `current` is the current user's profile JSON
        (or "null") after a change that touched the current user, None after one that did
        not: only the former are streamed."""
        self.seq += 1
        self.streamed = self.streamed or current is not None
        self.log.append(self.seq, kind, user_id, current)


# Changes after a seq, and whether that is all of them (False: the log was pruned past it).
Backlog = collections.namedtuple("Backlog", "changes complete")


class ChangeLog:
    """One app's change log. Writing happens inside the group commit's transaction; reading
    takes a pooled connection for the duration of the read only."""

    def __init__(self, storage, keep):
        self.storage = storage
        self.keep = max(1, keep)

    def lock_head(self):
        storage = self.storage
        return Head(*storage.statements.lock_head.one(storage.database), self)

    def append(self, seq, kind, user_id, current):
        at = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        self.storage.statements.append_change.execute(
            self.storage.database, seq=seq, at=at, kind=kind, user=user_id, state=current)

    def seal(self, head, first):
        """Advance the state row past the changes recorded since `first`, prune the log, and
        have the other processes' followers woken when the transaction commits; returns the
        announcement for this process's follower."""
        database = self.storage.database
        self.storage.statements.save_head.execute(database, seq=head.seq, current=head.current)
        self.prune(first, head.seq)
        announcement = Announcement(first + 1, head.seq, head.streamed)
        if not self.storage.is_sqlite:  # SQLite has no notifications: followers poll there
            database.execute_sql("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, announcement.payload()))
        return announcement

    def prune(self, first, last):
        """Keep the last `keep` changes for resume, pruning whenever the seq passes a multiple
        of PRUNE_EVERY (or of `keep` if fewer), so the log never holds much more."""
        every = min(PRUNE_EVERY, self.keep)
        if last // every != first // every:
            self.storage.statements.prune.execute(self.storage.database, through=last - self.keep)

    def commit_count(self):
        """SQLite's commit counter (moved after every commit in any process, read with no
        connection), or None on PostgreSQL, which has none."""
        counter = self.storage.counter
        return None if counter is None else counter.read()

    def last_seq(self):
        with self.storage.connection():
            return self.storage.statements.last_seq.scalar(self.storage.database)

    def read_after(self, seq, up_to):
        """The streamed changes with seq in (seq, up_to], oldest first, as (seq, state JSON),
        and whether nothing after seq had been pruned when they were read."""
        Change = self.storage.models.Change
        with self.storage.connection():
            changes = list(Change.select(Change.seq, Change.state)
                           .where(Change.seq > seq, Change.seq <= up_to, Change.state.is_null(False))
                           .order_by(Change.seq).tuples())
            # Read after the changes: the log is pruned from its old end only, so an oldest
            # row at or before seq + 1 now proves that nothing after seq was missing then.
            oldest = Change.select(fn.MIN(Change.seq)).scalar()
        return Backlog(changes, oldest is not None and oldest <= seq + 1)

    def position(self):
        """(last seq, oldest seq still kept, current state JSON), read together."""
        models = self.storage.models
        Change, State, User = models.Change, models.State, models.User
        with self.storage.connection(), self.storage.database.atomic():
            oldest = Change.select(fn.MIN(Change.seq)).scalar()
            seq, document = (State.select(State.seq, User.document)
                             .join(User, JOIN.LEFT_OUTER, on=(State.current == User.id))
                             .where(State.id == 1).tuples().get())
        return seq, oldest, document or "null"

    @contextlib.contextmanager
    def waiter(self, wakeup, poll_interval, relay=None, heard=None):
        """Yield (a function that blocks until the log may have grown, whether what woke it
        was announced).

        Local commits set `wakeup`. Other processes are noticed by polling on SQLite; on
        PostgreSQL through the instance's relay (feed_relay.py) when there is one, which holds
        the instance's one LISTEN and passes each NOTIFY's payload to `heard`, else by a
        LISTEN of this app's own (listener.py).
        """
        if self.storage.is_sqlite:
            def wait():
                wakeup.wait(poll_interval)
                wakeup.clear()

            yield wait, False
            return
        if relay is not None:
            source, announced = RelayClient(relay, wakeup, poll_interval, heard), True
        else:
            source = NotificationListener(listener_params(self.storage.direct_url), wakeup, poll_interval)
            announced = False
        try:
            yield source.wait, announced
        finally:
            source.close()


class Follower:
    """Follows one app's change log in this process and publishes it to the app's hub.

    Its thread starts with the first subscriber, in the process that serves it (after
    gevent has patched threading, when gunicorn forks workers from a master).
    """

    def __init__(self, change_log, hub, poll_interval, metrics, heartbeat=None, relay=None):
        self.log = change_log
        self.relay = relay  # the instance's feed relay socket, or None to LISTEN itself
        self.hub = hub
        self.metrics = metrics
        self.poll_interval = poll_interval
        self.heartbeat = heartbeat  # the hub's (hub.Heartbeat), started and stopped with this
        self.wakeup = threading.Event()
        self.thread = None
        self.start_lock = threading.Lock()
        self.seq = None  # the last seq read from the log
        self.read_at = None  # (commit count, seq) when the log was last read
        self.stopping = False
        self.announced = collections.deque()  # Announcements not yet followed, oldest first
        self.must_read = True  # something woke it that no announcement explains

    def wake(self, announcement=None):
        """Have the follower catch up: with what `announcement` says, or by reading the log."""
        if announcement is None:
            self.must_read = True
        else:
            self.announced.append(announcement)
        self.wakeup.set()

    def heard(self, payload):
        """A payload from the relay: a NOTIFY's, or anything else (read the log)."""
        self.wake(Announcement.parse(payload) if payload else None)

    def subscribe(self, size, limit, peer_gone, beats=None):
        """A new subscription that starts from everything committed before this call: a
        subscriber that connects after a write was acknowledged, by any process, starts with it."""
        self.ensure_started()
        committed = self.log.last_seq()
        self.wake()
        if not self.hub.wait_until(committed, CATCH_UP_SECONDS):
            raise ServiceUnavailable("The change feed is not following the database; try again "
                                     "shortly.", RETRY_SECONDS)
        return self.hub.subscribe(size, limit, peer_gone, beats)

    def watch(self, limit):
        """A stream fed no changes (hub.watch). The follower is started all the same: stopping
        it is what ends every stream on shutdown."""
        self.ensure_started()
        return self.hub.watch(limit)

    def stop(self):
        """Ask the follower to end every stream and stop. Takes none of the hub's locks, so a
        signal handler may call it whatever the interrupted code holds."""
        self.stopping = True
        self.wakeup.set()
        if self.heartbeat is not None:
            self.heartbeat.stop()

    def close(self, timeout=5):
        """Stop and wait for the thread, so that it does not outlive the app's database."""
        self.stop()
        if self.thread is not None:
            self.thread.join(timeout)
        if self.heartbeat is not None:
            self.heartbeat.join(timeout)

    def running(self):
        return self.thread is not None and self.thread.is_alive() and not self.stopping

    def ensure_started(self):
        with self.start_lock:
            if self.thread is None:
                if self.heartbeat is not None:
                    self.heartbeat.start()
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
        with self.log.waiter(self.wakeup, self.poll_interval, self.relay, self.heard) as (wait, announced):
            self.must_read = True  # whatever happened while it was not listening
            while not self.stopping:
                self.catch_up()
                wait()
                if not announced:
                    self.must_read = True

    def catch_up(self):
        """Publish every streamed change after the last seq read. On SQLite a poll finds
        whether anything was committed since the last read from the commit counter, without
        a connection: the count is read before the log, so a commit it missed moves it.
        Announcements waiting are followed whatever the count says."""
        count = self.log.commit_count()
        if count is not None and not self.announced and (count, self.seq) == self.read_at:
            self.metrics.feed_behind(0)  # nothing committed since the last read
            return
        self.read_from_log()
        self.read_at = (count, self.seq)

    def read_from_log(self):
        if self.seq is None:
            self.restart()
            return
        if not self.must_read and self.follow_announced():
            return
        self.must_read = False
        last = self.log.last_seq()
        self.metrics.feed_behind(last - self.seq)
        if last <= self.seq:
            self.forget_followed()
            return
        backlog = self.log.read_after(self.seq, up_to=last)
        if not backlog.complete:
            log.warning("the change log was pruned past this process's feed; announcing the "
                        "current state (raise CHANGE_LOG_KEEP)")
            self.restart()
            return
        for change_seq, state in backlog.changes:
            self.hub.publish(change_seq, state)
        self.hub.advance(last)
        self.seq = last
        self.forget_followed()

    def forget_followed(self):
        """Drop the announcements of commits the log was read past."""
        while self.announced and self.announced[0].last <= self.seq:
            self.announced.popleft()

    def follow_announced(self):
        """Move past announced commits that streamed nothing, without reading the log (most
        writes do not touch the current user). False, leaving the rest, at a gap or at a
        commit that streamed a change: the log is read then."""
        moved = False
        while self.announced:
            first, last, streamed = self.announced[0]
            if last > self.seq:
                if streamed or first != self.seq + 1:
                    return False
                self.seq, moved = last, True
            self.announced.popleft()
        if moved:
            self.hub.advance(self.seq)
        self.metrics.feed_behind(0)  # behind nothing it has been told of
        return True

    def restart(self):
        """Start again from the current state, announced to every subscriber."""
        seq, _oldest, state = self.log.position()
        self.hub.publish(seq, state)
        self.seq = seq
        self.forget_followed()
