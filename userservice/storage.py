"""One app's database: the pool for its URL and the settings every connection runs with,
the models and statements bound to it, its write transaction and, on SQLite, the commit
counter beside the file. How SQLite and PostgreSQL differ in connecting and locking lives
here; how other processes learn of a commit lives in changelog.py."""
import contextlib
import os
import threading
import time

from peewee import InterfaceError, OperationalError, SqliteDatabase
from playhouse import db_url
from playhouse.pool import MaxConnectionsExceeded, PooledPostgresqlDatabase, PooledSqliteDatabase

from . import models
from .commit_counter import CommitCounter, create_private_file
from .greenlets import greenlet_local_connections, psycopg_waits_cooperatively
from .statements import Statements

try:
    import psycopg
except ImportError:  # PostgreSQL is optional: the `postgres` extra
    psycopg = None

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


class IdleLimit:
    """A pool that hands out the connection returned last, so that the ones a burst opened
    stay idle, and closes any idle longer than `max_idle` seconds: playhouse's pool hands
    out the oldest and never closes an idle one, so a pool would keep its largest size.
    Idle connections are closed when the pool is next used, and by `close_idle_over` (called
    by the Storage's reaper when nothing uses the pool)."""

    def __init__(self, database, max_idle, **kwargs):
        self.max_idle = max_idle
        self.returned_at = {}  # connection key -> time.monotonic() when it was last returned
        super().__init__(database, **kwargs)

    def _connect(self):
        with self._pool_lock:
            if self.max_idle is not None:
                self.close_idle_over(self.max_idle)
            # playhouse pops the first entry: make it the last one returned.
            self._connections.sort(key=lambda entry: -self.returned_at.get(self.conn_key(entry[2]), 0))
            return super()._connect()

    def _close(self, conn, close_conn=False):
        with self._pool_lock:
            self.returned_at[self.conn_key(conn)] = time.monotonic()
            super()._close(conn, close_conn)

    def close_idle_over(self, seconds):
        """Close the connections idle for longer than `seconds`; returns how many."""
        with self._pool_lock:
            cutoff = time.monotonic() - seconds
            keep, expired = [], []
            for entry in self._connections:
                returned = self.returned_at.get(self.conn_key(entry[2]), 0)
                (expired if returned < cutoff else keep).append(entry)
            self._connections = keep
            for _timestamp, _counter, conn in expired:
                self._close_raw(conn)
            live = {self.conn_key(conn) for conn in self.in_use_and_idle()}
            self.returned_at = {key: at for key, at in self.returned_at.items() if key in live}
            return len(expired)

    def in_use_and_idle(self):
        return [entry[2] for entry in self._connections] + [c.connection for c in self._in_use.values()]

    def idle_count(self):
        with self._pool_lock:
            return len(self._connections)


class PostgresPool(IdleLimit, PooledPostgresqlDatabase):
    pass


class SqlitePool(IdleLimit, PooledSqliteDatabase):
    pass


POOLS = {"sqlite": SqlitePool, "sqlite+pool": SqlitePool, "postgres": PostgresPool,
         "postgresql": PostgresPool, "postgresql+pool": PostgresPool}


def is_sqlite_url(url):
    return POOLS.get(url.partition("://")[0]) is SqlitePool


def sqlite_path(url):
    return db_url.parse(url)["database"]


def libpq_url(url):
    """The URL as psycopg (libpq) takes it, for a connection outside the pool."""
    scheme, sep, rest = url.partition("://")
    return "postgresql" + sep + rest if scheme.startswith("postgres") else url


def pool_size(worker_class, threads):
    """Connections per process that let every concurrent request hold one: a gthread worker
    runs `threads` requests at once; gevent greenlets only hold one while a query runs."""
    return threads if worker_class == "gthread" else GEVENT_POOL_SIZE


def connect(url, max_connections=64, max_idle=None):
    """Open a pooled database for a playhouse.db_url URL.

    PostgreSQL connections keep no session state between transactions, so that the URL may
    name PgBouncer in transaction pooling mode: psycopg prepares no statements on the server
    (prepare_threshold=None), and nothing is SET on a session (a schema goes in the URL's
    `options`, or the role's default search_path behind PgBouncer)."""
    params = {"max_connections": max_connections, "stale_timeout": STALE_SECONDS,
              "timeout": POOL_WAIT_SECONDS, "max_idle": max_idle, **db_url.parse(url)}
    pool = POOLS[url.partition("://")[0]]
    if is_sqlite_url(url):
        create_private_file(sqlite_path(url))
        params.update(pragmas=SQLITE_PRAGMAS, check_same_thread=False)
    else:
        psycopg_waits_cooperatively(psycopg)
        params.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
        params["prepare_threshold"] = None
    return greenlet_local_connections(pool(**params))


def describe(url):
    """Where the data lives, for humans: a file path, or the server without its password."""
    parsed = db_url.parse(url)
    if url.startswith("sqlite"):
        return os.path.abspath(parsed["database"])
    return "postgresql://%s@%s:%s/%s" % (parsed.get("user", ""), parsed.get("host", ""),
                                          parsed.get("port", 5432), parsed["database"])


class Storage:
    """The database of one app. Nothing here is shared with another app in the process."""

    def __init__(self, url, max_connections, metrics, max_idle=None, direct_url=None):
        """`max_idle` None keeps idle connections (a short-lived Storage, as for migrations)."""
        self.url = url
        self.direct_url = direct_url or url  # for a session of its own: LISTEN, migrations
        self.metrics = metrics
        self.database = connect(url, max_connections, max_idle)
        self.reaper = IdleReaper(self.database, max_idle) if max_idle is not None else None
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
        if self.reaper is not None:
            self.reaper.ensure_started()
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
        if self.reaper is not None:
            self.reaper.stop()
        self.database.close_all()
        if self.counter is not None:
            self.counter.close()


class IdleReaper:
    """Closes the pool's idle connections once they pass the maximum idle time, even when no
    request comes to use the pool (which would close them too). A timer in this process: it
    sends nothing to the database. Started with the first connection taken, in the process
    that serves (after gevent has patched threading, under gunicorn)."""

    def __init__(self, pool, max_idle):
        self.pool = pool
        self.max_idle = max_idle
        self.stopping = threading.Event()
        self.thread = None
        self.start_lock = threading.Lock()

    def ensure_started(self):
        if self.thread is not None:
            return
        with self.start_lock:
            if self.thread is None and not self.stopping.is_set():
                self.thread = threading.Thread(target=self.run, name="userservice-pool-reaper", daemon=True)
                self.thread.start()

    def run(self):
        while not self.stopping.wait(self.max_idle / 2):
            self.pool.close_idle_over(self.max_idle)

    def stop(self):
        self.stopping.set()


UNAVAILABLE_ERRORS = (OperationalError, InterfaceError, MaxConnectionsExceeded) + (
    (psycopg.OperationalError, psycopg.InterfaceError) if psycopg else ())


def is_unavailable(error):
    """Whether an error means the database is out of reach (or out of connections), rather
    than a fault in a query. Peewee wraps the driver's error in `orig`."""
    cause = getattr(error, "orig", error)
    if isinstance(cause, MaxConnectionsExceeded):
        return True
    return psycopg is not None and isinstance(cause, (psycopg.OperationalError, psycopg.InterfaceError))
