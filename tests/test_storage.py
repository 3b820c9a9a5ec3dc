"""storage.py: the pooled URL, pool sizes, psycopg under gevent, and the settings every
pooled connection runs with, on both backends."""
import subprocess
import sys
import threading

import pytest

from userservice import storage

WAIT_SECONDS = 20


@pytest.mark.parametrize("url, pooled", [
    ("sqlite:///x.db", "sqlite+pool:///x.db"),
    ("postgres://u@h/d", "postgresql+pool://u@h/d"),
    ("postgresql://u@h/d", "postgresql+pool://u@h/d"),
    ("postgresql+pool://u@h/d", "postgresql+pool://u@h/d"),
])
def test_pooled_url_always_names_a_pool(url, pooled):
    assert storage.pooled_url(url) == pooled


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
