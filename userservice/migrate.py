"""Applying the numbered migrations in migrations/ (shipped as userservice.migrations), from
any number of processes and hosts at once."""
import contextlib
import fcntl
import logging
import os

from playhouse.migrations import Runner

from . import migrations

log = logging.getLogger(__name__)

MIGRATIONS_DIR = os.path.dirname(migrations.__file__)
MIGRATION_LOCK_KEY = 0x75736572  # "user": the PostgreSQL advisory lock key for migrations


@contextlib.contextmanager
def migration_lock(storage):
    """Hold a lock across processes and hosts while migrations run: a lock, not luck."""
    database = storage.database
    if storage.is_sqlite:
        with open(database.database + ".lock", "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            yield
        return
    with storage.connection():
        database.execute_sql("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            yield
        finally:
            database.execute_sql("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))


def current_schema(storage):
    """PostgreSQL's schema from the search_path (Peewee would otherwise assume `public`)."""
    if storage.is_sqlite:
        return None
    with storage.connection():
        return storage.database.execute_sql("SELECT current_schema()").fetchone()[0]


def runner(storage):
    return Runner(storage.database, MIGRATIONS_DIR, schema=current_schema(storage))


def migrate(storage):
    """Apply pending migrations; returns their names. Safe when many processes start at once."""
    with migration_lock(storage), storage.connection():
        applied = runner(storage).up()
    if applied:
        storage.count_commit()  # what a migration wrote must not hide behind running servers' caches
        log.info("applied migrations: %s", ", ".join(applied))
    return applied


def pending(storage):
    """The names of the migrations not applied yet."""
    with storage.connection():
        return [migration.name for migration in runner(storage).status() if not migration.applied]
