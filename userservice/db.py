"""The database: one proxy for the models, bound from a URL when an app is initialised.

Everything that differs between SQLite and PostgreSQL lives in this module: the pooled
driver, connection settings, how writers serialise, the migration lock and how other
processes learn that the change log has grown.
"""
import contextlib
import fcntl
import logging
import os

from peewee import DatabaseProxy, SqliteDatabase
from playhouse import db_url
from playhouse.migrations import Runner

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


def pooled_url(url):
    """Every backend goes through playhouse.pool, whatever the URL names."""
    scheme, sep, rest = url.partition("://")
    return POOLED_SCHEMES.get(scheme, scheme) + sep + rest


def sqlite_path(url):
    return db_url.parse(url)["database"]


def connect(url, max_connections=64):
    """Open a pooled database for a playhouse.db_url URL."""
    url = pooled_url(url)
    params = {"max_connections": max_connections, "stale_timeout": 300}
    if url.startswith("sqlite"):
        create_private_file(sqlite_path(url))
        params.update(pragmas=SQLITE_PRAGMAS, check_same_thread=False)
    return db_url.connect(url, **params)


def create_private_file(path):
    """Create the SQLite file readable by its owner only, before SQLite creates it 0644."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))


def init_app(app):
    if database.obj is not None:
        database.close_all()
    database.initialize(connect(app.config["DATABASE_URL"], app.config["DATABASE_MAX_CONNECTIONS"]))
    if app.config["MIGRATE_ON_START"]:
        migrate()


def is_sqlite():
    return isinstance(database.obj, SqliteDatabase)


def describe(url):
    """Where the data lives, for humans: a file path, or the server without its password."""
    parsed = db_url.parse(url)
    if url.startswith("sqlite"):
        return os.path.abspath(parsed["database"])
    return "postgresql://%s@%s:%s/%s" % (parsed.get("user", ""), parsed.get("host", ""),
                                          parsed.get("port", 5432), parsed["database"])


def write_transaction():
    """A transaction that holds the write lock from its first statement.

    SQLite takes it with BEGIN IMMEDIATE; on PostgreSQL the store locks the state row.
    """
    if is_sqlite():
        return database.atomic("IMMEDIATE")
    return database.atomic()


def notify_change(seq):
    """Wake other processes' listeners when this transaction commits (PostgreSQL only).

    SQLite has no cross-process notification: listeners there poll the state row.
    """
    if not is_sqlite():
        database.execute_sql("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, str(seq)))


@contextlib.contextmanager
def change_waiter(wakeup, poll_interval):
    """Yield a function that blocks until the change log may have grown.

    Local commits set `wakeup`. Other processes are noticed by polling on SQLite, and by
    LISTEN on PostgreSQL (where polling stays as the safety net for a lost notification).
    """
    def wait():
        wakeup.wait(poll_interval)
        wakeup.clear()

    yield wait


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
        log.info("applied migrations: %s", ", ".join(applied))
    return applied
