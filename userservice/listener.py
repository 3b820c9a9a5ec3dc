"""Hearing of commits made by other processes and hosts on PostgreSQL: a session connection
that holds `LISTEN userservice_changes` (each write's transaction sends `pg_notify` there).

It is opened on the direct URL (DATABASE_DIRECT_URL), never through PgBouncer in
transaction pooling mode, which cannot carry LISTEN. Under gunicorn one such connection
serves a whole instance (feed_relay.py); an app outside gunicorn holds its own.
"""
import collections
import logging
import time

from playhouse import db_url

try:
    import psycopg
except ImportError:  # PostgreSQL is optional: the `postgres` extra
    psycopg = None

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "userservice_changes"
SAFETY_NET_POLL_SECONDS = 1.0  # an app's own listener reads the log this often even without a NOTIFY
RECONNECT_BACKOFF_SECONDS = (0.1, 5.0)  # the first and longest wait between attempts
CONNECT_TIMEOUT_SECONDS = 5  # unless the URL sets connect_timeout
# A listener only reads: TCP keepalives notice a connection that died silently.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}



class Announcement(collections.namedtuple("Announcement", "first last streamed")):
    """What a committed write transaction tells every follower (its NOTIFY payload, and its
    on_commit in its own process): it wrote the changes first..last, and whether one of them
    is streamed. A follower at first - 1 that is told nothing was streamed moves to `last`
    without reading the log; any other case, or a gap, has it read the log."""

    def payload(self):
        return "%d:%d:%d" % (self.first, self.last, self.streamed)

    @classmethod
    def parse(cls, payload):
        """The announcement a payload carries, or None (a relay's "read the log", say)."""
        try:
            first, last, streamed = (int(part) for part in payload.split(b":" if isinstance(payload, bytes) else ":"))
        except ValueError:
            return None
        return cls(first, last, bool(streamed))

def listener_params(direct_url):
    """psycopg's parameters for the direct URL (search_path options included), named after its
    application_name with `-listener`, so operators can tell the connection apart."""
    params = db_url.parse(direct_url)
    params["dbname"] = params.pop("database")
    if "password" in params:
        params["password"] = str(params["password"])
    name = params.get("application_name", "userservice")
    params.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
    params.update(KEEPALIVES, application_name=name + "-listener", autocommit=True)
    return params


def connect_listening(params):
    """A new connection LISTENing on the channel."""
    connection = psycopg.connect(**params)
    try:
        connection.execute("LISTEN %s" % NOTIFY_CHANNEL)
    except BaseException:
        connection.close()
        raise
    return connection


class NotificationListener:
    """A dedicated PostgreSQL connection LISTENing for commits in any process.

    `wait` returns on a notification, on the local `wakeup`, after the safety-net interval,
    and once after every (re)connection, since notifications sent while it was away are
    lost: the caller then reads the change log. While the database is unreachable `wait`
    keeps trying, with backoff, and does not return.
    """

    def __init__(self, params, wakeup, poll_interval):
        self.params = params
        self.wakeup = wakeup
        self.poll_interval = poll_interval
        self.connection = None

    def wait(self):
        if self.connection is None:
            self.connect_with_backoff()
        else:
            self.wait_for_notification()
        self.wakeup.clear()

    def wait_for_notification(self):
        deadline = time.monotonic() + max(self.poll_interval, SAFETY_NET_POLL_SECONDS)
        while not self.wakeup.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                if self.received(timeout=min(self.poll_interval, remaining)):
                    return
            except psycopg.Error as error:
                log.warning("change listener lost its connection: %s", error)
                self.close()
                self.connect_with_backoff()
                return

    def received(self, timeout):
        """Whether a notification arrived within timeout; drains any others already here."""
        if not any(True for _ in self.connection.notifies(timeout=timeout, stop_after=1)):
            return False
        for _ in self.connection.notifies(timeout=0):
            pass
        return True

    def connect_with_backoff(self):
        delay, longest = RECONNECT_BACKOFF_SECONDS
        while True:
            try:
                self.connection = connect_listening(self.params)
                return
            except psycopg.Error as error:
                self.close()
                log.warning("change listener cannot reach the database, retrying in %.1fs: %s",
                            delay, error)
                time.sleep(delay)
                delay = min(delay * 2, longest)

    def close(self):
        if self.connection is not None:
            self.connection.close()
            self.connection = None


