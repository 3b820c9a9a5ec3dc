"""One app's database: the pool for its URL and the settings every connection runs with,
the models and statements bound to it, its write transaction and, on SQLite, the commit
counter beside the file. How SQLite and PostgreSQL differ in connecting and locking lives
here; how other processes learn of a commit lives in changelog.py."""
import contextlib
import os

from peewee import InterfaceError, OperationalError, SqliteDatabase
from playhouse import db_url
from playhouse.pool import MaxConnectionsExceeded

from . import models
from .commit_counter import CommitCounter, create_private_file
from .greenlets import greenlet_local_connections, psycopg_waits_cooperatively
from .statements import Statements

try:
    import psycopg
except ImportError:  # PostgreSQL is optional: the `postgres` extra
    psycopg = None

POOLED_SCHEMES = {
    "sqlite": "sqlite+pool",
    "postgres": "postgresql+pool",
    "postgresql": "postgresql+pool",
}
SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "synchronous": "full",  # every commit is flushed to disk before it is acknowledged
    "busy_timeout": 10000,
    "foreign_keys": 1,
}
POOL_WAIT_SECONDS = 10  # a request waits this long for a free pooled connection, then 503
CONNECT_TIMEOUT_SECONDS = 5  # PostgreSQL, unless the URL sets connect_timeout
STALE_SECONDS = 300  # a pooled connection older than this is replaced
GEVENT_POOL_SIZE = 10  # greenlets only hold a connection while a query runs


def pooled_url(url):
    """Every backend goes through playhouse.pool, whatever the URL names."""
    scheme, sep, rest = url.partition("://")
    return POOLED_SCHEMES.get(scheme, scheme) + sep + rest


def sqlite_path(url):
    return db_url.parse(url)["database"]


def pool_size(worker_class, threads):
    """Connections per process that let every concurrent request hold one: a gthread worker
    runs `threads` requests at once; gevent greenlets only hold one while a query runs."""
    return threads if worker_class == "gthread" else GEVENT_POOL_SIZE


def connect(url, max_connections=64):
    """Open a pooled database for a playhouse.db_url URL."""
    url = pooled_url(url)
    params = {"max_connections": max_connections, "stale_timeout": STALE_SECONDS, "timeout": POOL_WAIT_SECONDS}
    if url.startswith("sqlite"):
        create_private_file(sqlite_path(url))
        params.update(pragmas=SQLITE_PRAGMAS, check_same_thread=False)
    else:
        psycopg_waits_cooperatively(psycopg)
        if "connect_timeout" not in url:
            params["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
    return greenlet_local_connections(db_url.connect(url, **params))


def describe(url):
    """Where the data lives, for humans: a file path, or the server without its password."""
    parsed = db_url.parse(url)
    if url.startswith("sqlite"):
        return os.path.abspath(parsed["database"])
    return "postgresql://%s@%s:%s/%s" % (parsed.get("user", ""), parsed.get("host", ""),
                                          parsed.get("port", 5432), parsed["database"])


class Storage:
    """The database of one app. Nothing here is shared with another app in the process."""

    def __init__(self, url, max_connections, metrics):
        self.url = url
        self.metrics = metrics
        self.database = connect(url, max_connections)
        self.is_sqlite = isinstance(self.database, SqliteDatabase)
        self.models = models.bind(self.database)
        self.statements = Statements(self.models, lock_rows=not self.is_sqlite)
        self.counter = CommitCounter(sqlite_path(url) + "-commits") if self.is_sqlite else None

    @contextlib.contextmanager
    def connection(self):
        """A pooled connection for the duration of a `with` block, and only for that (a
        block inside another one uses the outer block's connection)."""
        database = self.database
        if not database.is_closed():
            yield
            return
        with self.metrics.waiting_for_connection():
            database.connect()
        self.metrics.connection_taken()
        try:
            yield
        finally:
            database.close()
            self.metrics.connection_returned()

    @contextlib.contextmanager
    def write_transaction(self):
        """A transaction that holds the write lock from its first statement.

        SQLite writers take turns through the commit counter's file lock, which wakes the
        next one as soon as the turn is passed (SQLite's own busy handler would poll, and
        under gevent stall the worker), and count the commit before passing it. On
        PostgreSQL the change log locks the state row.
        """
        if self.counter is None:
            with self.database.atomic():
                yield
            return
        with self.counter.turn():
            with self.database.atomic("IMMEDIATE"):
                yield
            self.counter.count()

    def count_commit(self):
        """Count a commit made outside write_transaction: a writer killed between its commit
        and its count, or a migration, must not leave that commit hidden behind the other
        processes' read caches."""
        if self.counter is not None:
            self.counter.count_alone()

    def commit_marker(self):
        """A value that differs after any change committed anywhere, read without a connection
        on SQLite; PostgreSQL (several hosts, no shared memory) reads the state row's seq."""
        if self.counter is not None:
            return self.counter.read()
        with self.connection():
            return self.statements.last_seq.scalar(self.database)

    def close(self):
        self.database.close_all()
        if self.counter is not None:
            self.counter.close()


UNAVAILABLE_ERRORS = (OperationalError, InterfaceError, MaxConnectionsExceeded) + (
    (psycopg.OperationalError, psycopg.InterfaceError) if psycopg else ())


def is_unavailable(error):
    """Whether an error means the database is out of reach (or out of connections), rather
    than a fault in a query. Peewee wraps the driver's error in `orig`."""
    cause = getattr(error, "orig", error)
    if isinstance(cause, MaxConnectionsExceeded):
        return True
    return psycopg is not None and isinstance(cause, (psycopg.OperationalError, psycopg.InterfaceError))
