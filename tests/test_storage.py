"""storage.py: the pool for every URL, pool sizes, idle connections given back, psycopg
under gevent, and the settings every pooled connection runs with, on both backends."""
import subprocess
import sys
import threading
import time

import pytest

from userservice import storage
from userservice.metrics import Unmeasured

WAIT_SECONDS = 20


@pytest.mark.parametrize("url, pool", [
    ("sqlite:///x.db", storage.SqlitePool),
    ("sqlite+pool:///x.db", storage.SqlitePool),
    ("postgres://u@h/d", storage.PostgresPool),
    ("postgresql://u@h/d", storage.PostgresPool),
    ("postgresql+pool://u@h/d", storage.PostgresPool),
])
def test_connect_always_opens_a_pool(url, pool, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    database = storage.connect(url)
    assert type(database) is pool
    database.close_all()


def open_at_once(app_storage, count):
    """Take `count` connections of the pool at once, then give them all back."""
    pooled_connections_settings(app_storage, count, "SELECT 1")


def test_pool_closes_connections_idle_past_the_maximum_idle_time(database_url):
    """A burst opens connections; once idle past DATABASE_MAX_IDLE they are closed, even if
    nothing uses the pool any more (playhouse's pool alone keeps them open for ever)."""
    app_storage = storage.Storage(database_url, max_connections=5, metrics=Unmeasured(), max_idle=0.3)
    try:
        open_at_once(app_storage, 4)
        assert app_storage.database.idle_count() == 4
        deadline = time.monotonic() + WAIT_SECONDS
        while app_storage.database.idle_count() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert app_storage.database.idle_count() == 0
    finally:
        app_storage.close()


def test_pool_hands_out_the_connection_returned_last(database_url):
    """So that a steady load of one request at a time keeps one connection, and the others a
    burst opened reach the maximum idle time."""
    app_storage = storage.Storage(database_url, max_connections=5, metrics=Unmeasured(), max_idle=3600)
    try:
        open_at_once(app_storage, 3)
        backend = "SELECT 1" if app_storage.is_sqlite else "SELECT pg_backend_pid()"
        seen = set()
        for _ in range(5):
            with app_storage.connection():
                seen.add(id(app_storage.database.connection()))
                app_storage.database.execute_sql(backend)
        assert len(seen) == 1 and app_storage.database.idle_count() == 3
    finally:
        app_storage.close()


def test_postgres_pool_prepares_no_statements_on_the_server(postgres_url):
    """PgBouncer in transaction pooling mode hands each transaction any server connection: a
    statement prepared on one would be missing on the next."""
    app_storage = storage.Storage(postgres_url, max_connections=1, metrics=Unmeasured())
    try:
        with app_storage.connection():
            for _ in range(10):
                app_storage.database.execute_sql("SELECT %s::int", (1,))
            prepared = app_storage.database.execute_sql("SELECT count(*) FROM pg_prepared_statements").fetchone()
        assert prepared == (0,)
    finally:
        app_storage.close()


@pytest.mark.parametrize("worker_class, threads, size", [
    ("gthread", 32, 32), ("gthread", 4, 4), ("gevent", 32, storage.GEVENT_POOL_SIZE)])
def test_pool_size_follows_the_worker_class(worker_class, threads, size):
    assert storage.pool_size(worker_class, threads) == size


GEVENT_WORKER = """
import userservice.cli  # as the gunicorn master does: peewee imports psycopg first
from gevent import monkey
monkey.patch_all()
from psycopg import waiting
from userservice import storage
from userservice.metrics import Unmeasured
storage.connect("postgresql://nobody@127.0.0.1:1/none")
print(waiting.wait.__name__)
"""


def test_connect_makes_psycopg_wait_through_gevent_when_gevent_patched():
    output = subprocess.run([sys.executable, "-c", GEVENT_WORKER], capture_output=True, text=True,
                            timeout=60, check=True).stdout
    assert output.strip() not in ("", "wait_c")


def pooled_connections_settings(app_storage, count, query):
    """Run `query` on `count` connections of the app's pool, all open at once."""
    results, opened, release = [], threading.Barrier(count + 1), threading.Event()

    def hold():
        with app_storage.connection():
            results.append(app_storage.database.execute_sql(query).fetchone())
            opened.wait(WAIT_SECONDS)
            release.wait(WAIT_SECONDS)

    threads = [threading.Thread(target=hold) for _ in range(count)]
    for thread in threads:
        thread.start()
    opened.wait(WAIT_SECONDS)
    release.set()
    for thread in threads:
        thread.join(WAIT_SECONDS)
    return results


SQLITE_SETTINGS = "SELECT * FROM pragma_journal_mode, pragma_synchronous, pragma_foreign_keys, pragma_busy_timeout"
DURABLE_SQLITE = ("wal", 2, 1, 10000)  # synchronous=2 is FULL: every commit is flushed to disk


def test_every_pooled_connection_runs_with_durable_settings(app, service):
    """A missing flush is invisible to a SIGKILL test: check what each connection runs with."""
    if service.storage.is_sqlite:
        assert pooled_connections_settings(service.storage, 3, SQLITE_SETTINGS) == [DURABLE_SQLITE] * 3
    else:
        settings = pooled_connections_settings(service.storage, 3, "SELECT current_setting('synchronous_commit'), "
                                                                   "current_setting('fsync'), current_schema()")
        schema = app.config["DATABASE_URL"].rpartition("search_path%3D")[2]
        assert settings == [("on", "on", schema)] * 3
