"""The database: one proxy for the models, bound from a URL when an app is initialised.

Everything that differs between SQLite and PostgreSQL lives in this module: the pooled
driver, connection settings, how writers serialise, the migration lock and how other
processes learn that the change log has grown.
"""
import contextlib
import fcntl
import importlib
import logging
import mmap
import os
import struct
import sys
import time

from peewee import DatabaseProxy, InterfaceError, OperationalError, SqliteDatabase
from playhouse import db_url
from playhouse.migrations import Runner
from playhouse.pool import MaxConnectionsExceeded

from .errors import Problem, handle_unexpected, problem_response

try:
    import psycopg
except ImportError:  # PostgreSQL is optional: the `postgres` extra
    psycopg = None

log = logging.getLogger(__name__)
database = DatabaseProxy()

MIGRATIONS_DIR = os.path.join(os.path.dirname(__file__), "migrations")
POOLED_SCHEMES = {
    "sqlite": "sqlite+pool",
    "postgres": "postgresql+pool",
    "postgresql": "postgresql+pool",
}
SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "synchronous": "full",
    "busy_timeout": 10000,
    "foreign_keys": 1,
}
NOTIFY_CHANNEL = "userservice_changes"
MIGRATION_LOCK_KEY = 0x75736572  # "user": the advisory lock key for migrations
POOL_WAIT_SECONDS = 10  # a request waits this long for a free pooled connection, then 503
CONNECT_TIMEOUT_SECONDS = 5  # PostgreSQL, unless the URL sets connect_timeout
GEVENT_POOL_SIZE = 10  # greenlets only hold a connection while a query runs
SAFETY_NET_POLL_SECONDS = 1.0  # PostgreSQL: read the log this often even without a NOTIFY
RECONNECT_BACKOFF_SECONDS = (0.1, 5.0)  # the listener's first and longest wait between attempts


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
    params = {"max_connections": max_connections, "stale_timeout": 300, "timeout": POOL_WAIT_SECONDS}
    if url.startswith("sqlite"):
        create_private_file(sqlite_path(url))
        params.update(pragmas=SQLITE_PRAGMAS, check_same_thread=False)
    else:
        cooperate_with_gevent()
        if "connect_timeout" not in url:
            params["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
    return greenlet_local_connections(db_url.connect(url, **params))


def greenlet_local_connections(pooled):
    """Under gevent, give each greenlet its own connection state. peewee keeps it in a
    threading.local subclass made when peewee was imported (in the gunicorn master, before
    the worker patched threading), so greenlets would otherwise share one connection."""
    if gevent_patched("threading"):
        import threading

        import peewee

        pooled._state = type("GreenletConnectionState", (peewee._ConnectionState, threading.local), {})()
    return pooled


def cooperate_with_gevent():
    """Make psycopg wait for its socket through gevent when gevent has patched select.

    psycopg picks its wait function once, when first imported, and the gunicorn master
    imports it (through peewee) before a gevent worker patches select: every query, and the
    listener's wait for NOTIFY, would then block the whole worker. Letting psycopg choose
    again picks the function it would have picked had it been imported after the patch.
    """
    if psycopg is None or not gevent_patched("select"):
        return
    from psycopg import waiting

    if waiting.wait is getattr(waiting, "wait_c", None):
        importlib.reload(waiting)


def create_private_file(path):
    """Create the SQLite file readable by its owner only, before SQLite creates it 0644."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))


def init_app(app):
    global commit_counter
    if database.obj is not None:
        database.close_all()
    if commit_counter is not None:
        commit_counter.close()
    url = app.config["DATABASE_URL"]
    database.initialize(connect(url, app.config["DATABASE_MAX_CONNECTIONS"]))
    commit_counter = CommitCounter(sqlite_path(url) + "-commits") if is_sqlite() else None
    for error_class in UNAVAILABLE_ERRORS:
        app.register_error_handler(error_class, handle_database_error)
    if app.config["MIGRATE_ON_START"]:
        migrate()
    count_commit()  # a writer killed between its commit and its count must not leave that
    # commit hidden behind the other processes' read caches


class Unavailable(Problem):
    """The database cannot be reached: the client may retry, nothing was written."""

    def __init__(self):
        super().__init__(503, "The database is unreachable; try again shortly.",
                         headers={"Retry-After": "2"})


UNAVAILABLE_ERRORS = (OperationalError, InterfaceError, MaxConnectionsExceeded) + (
    (psycopg.OperationalError, psycopg.InterfaceError) if psycopg else ())


def is_unavailable(error):
    """Whether an error means the database is out of reach (or out of connections), rather
    than a fault in a query. Peewee wraps the driver's error in `orig`."""
    cause = getattr(error, "orig", error)
    if isinstance(cause, MaxConnectionsExceeded):
        return True
    return psycopg is not None and isinstance(cause, (psycopg.OperationalError, psycopg.InterfaceError))


def handle_database_error(error):
    if not is_unavailable(error):
        return handle_unexpected(error)
    log.warning("database unavailable: %s", error)
    return problem_response(Unavailable())


def is_sqlite():
    return isinstance(database.obj, SqliteDatabase)


def describe(url):
    """Where the data lives, for humans: a file path, or the server without its password."""
    parsed = db_url.parse(url)
    if url.startswith("sqlite"):
        return os.path.abspath(parsed["database"])
    return "postgresql://%s@%s:%s/%s" % (parsed.get("user", ""), parsed.get("host", ""),
                                          parsed.get("port", 5432), parsed["database"])


@contextlib.contextmanager
def write_transaction():
    """A transaction that holds the write lock from its first statement.

    SQLite writers take turns through the commit counter's file lock, which wakes the next
    one as soon as the turn is passed (SQLite's own busy handler would poll, and under gevent
    stall the worker), and count the commit before passing it. On PostgreSQL the store
    locks the state row.
    """
    if not is_sqlite():
        with database.atomic():
            yield
        return
    with commit_counter.turn():
        with database.atomic("IMMEDIATE"):
            yield
        commit_counter.count()


def for_update(sql):
    """Lock the rows a SELECT reads until commit: FOR UPDATE on PostgreSQL; on SQLite the
    IMMEDIATE transaction already holds the database's write lock (and has no FOR UPDATE)."""
    return sql if is_sqlite() else sql + " FOR UPDATE"


def notify_change(seq):
    """Wake other processes' listeners when this transaction commits (PostgreSQL only).

    SQLite has no cross-process notification: listeners there poll the state row.
    """
    if not is_sqlite():
        database.execute_sql("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, str(seq)))


class CommitCounter:
    """A number in a small shared file beside an SQLite database, counted up after every
    commit, before the writer is answered: the processes on its host learn from one memory
    read, with no connection and no query, whether anything was committed since they last
    looked. Its file lock is the writers' turn, which also makes each count atomic."""

    FORMAT = "=Q"

    def __init__(self, path):
        create_private_file(path)
        size = struct.calcsize(self.FORMAT)
        self.fd = os.open(path, os.O_RDWR)
        if os.fstat(self.fd).st_size < size:
            os.ftruncate(self.fd, size)
        self.map = mmap.mmap(self.fd, size)

    def read(self):
        """A read racing a count may see the old count (its writer has not answered yet) or a
        torn value no reader has cached (which costs one fresh read of the database)."""
        return struct.unpack_from(self.FORMAT, self.map)[0]

    @contextlib.contextmanager
    def turn(self):
        """Exclusive across processes; a wait for another process's turn yields the worker."""
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            wait_blocking(fcntl.flock, self.fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def count(self):
        """Add one; only while holding the turn, since a lost increment could repeat a count."""
        struct.pack_into(self.FORMAT, self.map, 0, self.read() + 1)

    def close(self):
        self.map.close()
        os.close(self.fd)


def gevent_patched(module):
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched(module)


def wait_blocking(function, *args):
    """Call a function that blocks in the kernel; under gevent, on a thread of the hub's pool,
    so the worker's other greenlets go on meanwhile."""
    if not gevent_patched("threading"):
        return function(*args)
    import gevent

    return gevent.get_hub().threadpool.apply(function, args)


commit_counter = None  # SQLite only: the CommitCounter beside the database file

LAST_SEQ_SQL = 'SELECT "seq" FROM "state" WHERE "id" = 1'


def count_commit():
    """Count a commit made outside write_transaction (say, by a migration)."""
    if commit_counter is not None:
        with commit_counter.turn():
            commit_counter.count()


def commit_marker():
    """A value that differs after any change committed anywhere, read without a connection
    on SQLite; PostgreSQL (several hosts, no shared memory) reads the state row's seq."""
    if commit_counter is not None:
        return commit_counter.read()
    with database.connection_context():
        return database.execute_sql(LAST_SEQ_SQL).fetchone()[0]


@contextlib.contextmanager
def change_waiter(wakeup, poll_interval):
    """Yield a function that blocks until the change log may have grown.

    Local commits set `wakeup`. Other processes are noticed by polling on SQLite, and by
    LISTEN on PostgreSQL (where polling stays as the safety net for a lost notification).
    """
    if is_sqlite():
        def wait():
            wakeup.wait(poll_interval)
            wakeup.clear()

        yield wait
        return
    listener = NotificationListener(listener_params(database.obj), wakeup, poll_interval)
    try:
        yield listener.wait
    finally:
        listener.close()


def listener_params(pooled):
    """The pool's own connection parameters (search_path options included), for a connection
    of its own named after the pool's application_name, so operators can tell it apart."""
    params = dict(pooled.connect_params)
    name = params.get("application_name", "userservice")
    params.update(application_name=name + "-listener", autocommit=True)
    if pooled.database.startswith("postgresql://"):
        params["conninfo"] = pooled.database
    else:
        params["dbname"] = pooled.database
    return params


class NotificationListener:
    """A dedicated connection LISTENing for commits in any process.

    `wait` returns on a notification, on the local `wakeup`, after the safety-net interval,
    and once after every (re)connection, since notifications sent while it was away are
    lost: the caller then reads the change log, which is the source of truth. While the
    database is unreachable `wait` keeps trying, with backoff, and does not return.
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
                self.connection = psycopg.connect(**self.params)
                self.connection.execute("LISTEN %s" % NOTIFY_CHANNEL)
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


@contextlib.contextmanager
def migration_lock():
    """Hold a lock across processes and hosts while migrations run: a lock, not luck."""
    if is_sqlite():
        with open(database.obj.database + ".lock", "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            yield
        return
    with database.connection_context():
        database.execute_sql("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            yield
        finally:
            database.execute_sql("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))


def current_schema():
    """PostgreSQL's schema from the search_path (Peewee would otherwise assume `public`)."""
    if is_sqlite():
        return None
    return database.execute_sql("SELECT current_schema()").fetchone()[0]


def migrate():
    """Apply pending migrations; returns their names. Safe when many processes start at once."""
    with migration_lock(), database.connection_context():
        applied = Runner(database.obj, MIGRATIONS_DIR, schema=current_schema()).up()
    if applied:
        count_commit()  # what a migration wrote must not hide behind running servers' caches
        log.info("applied migrations: %s", ", ".join(applied))
    return applied
