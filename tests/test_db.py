"""db.py: pooling, the change waiter on each backend, migrations from many processes, 503."""
import os
import subprocess
import sys
import threading
from urllib.parse import unquote

import pytest

from userservice import db
from conftest import discard, postgres_connection

WAIT_GUARD_SECONDS = 20  # far beyond any wake-up, far below the waits used to catch a miss


@pytest.mark.parametrize("url, pooled", [
    ("sqlite:///x.db", "sqlite+pool:///x.db"),
    ("postgres://u@h/d", "postgresql+pool://u@h/d"),
    ("postgresql://u@h/d", "postgresql+pool://u@h/d"),
    ("postgresql+pool://u@h/d", "postgresql+pool://u@h/d"),
])
def test_pooled_url_always_names_a_pool(url, pooled):
    assert db.pooled_url(url) == pooled


@pytest.mark.parametrize("worker_class, threads, size", [
    ("gthread", 32, 32), ("gthread", 4, 4), ("gevent", 32, db.GEVENT_POOL_SIZE)])
def test_pool_size_follows_the_worker_class(worker_class, threads, size):
    assert db.pool_size(worker_class, threads) == size


def wait_in_thread(wait):
    """Run one wait() in a thread; returns whether it returned within the guard."""
    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    thread.join(WAIT_GUARD_SECONDS)
    return not thread.is_alive()


def test_change_waiter_returns_on_local_wakeup(app):
    wakeup = threading.Event()
    with db.change_waiter(wakeup, poll_interval=600) as wait:
        if not db.is_sqlite():
            wait()  # the first wait returns once LISTEN is in place
        wakeup.set()
        assert wait_in_thread(wait)
        assert not wakeup.is_set()


def notify(postgres_url):
    with postgres_connection() as connection:
        connection.execute("SELECT pg_notify(%s, '1')", (db.NOTIFY_CHANNEL,))


def schema_of(postgres_url):
    return unquote(postgres_url).rpartition("search_path=")[2]


@pytest.fixture
def postgres_app(postgres_url):
    """An app whose connections are named after its schema, so that killing its listener
    leaves other tests' listeners alone."""
    from userservice import create_app

    url = "%s&application_name=%s" % (postgres_url, schema_of(postgres_url))
    app = create_app({"TESTING": True, "DATABASE_URL": url})
    yield app
    discard(app)


def test_change_waiter_wakes_on_notify_from_another_connection(postgres_app, postgres_url):
    with db.change_waiter(threading.Event(), poll_interval=600) as wait:
        wait()
        notify(postgres_url)
        assert wait_in_thread(wait)


def listener_pids(application_name):
    with postgres_connection() as connection:
        return [pid for (pid,) in connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application_name,))]


def terminate(pids):
    with postgres_connection() as connection:
        for pid in pids:
            connection.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_change_waiter_reconnects_after_its_connection_is_killed(postgres_app, postgres_url):
    name = db.listener_params(db.database.obj)["application_name"]
    with db.change_waiter(threading.Event(), poll_interval=600) as wait:
        wait()
        killed = listener_pids(name)
        assert len(killed) == 1
        terminate(killed)
        assert wait_in_thread(wait)  # the lost connection: reconnects, then asks for a re-read
        assert listener_pids(name) and listener_pids(name) != killed
        notify(postgres_url)
        assert wait_in_thread(wait)


def test_listener_params_keep_the_pool_options_and_name_the_connection(postgres_app):
    params = db.listener_params(db.database.obj)
    assert params["options"].startswith("-c search_path=test_")
    assert params["application_name"].endswith("-listener")
    assert params["autocommit"] is True


def test_migrate_from_many_processes_applies_the_schema_once(database_url):
    env = {**os.environ, "USERSERVICE_DATABASE_URL": database_url}
    processes = [subprocess.Popen([sys.executable, "-m", "userservice.cli", "migrate"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for _ in range(4)]
    outputs = [process.communicate(timeout=60)[0] for process in processes]
    assert [process.returncode for process in processes] == [0] * 4, outputs
    assert sum("applied: 0001_initial" in output for output in outputs) == 1, outputs
    app_config = {"DATABASE_URL": database_url, "MIGRATE_ON_START": False}
    from userservice import create_app

    app = create_app(app_config)
    try:
        assert db.migrate() == []
        from userservice.models import State

        with db.database.connection_context():
            assert State.select().count() == 1
    finally:
        discard(app)


GEVENT_WORKER = """
import userservice.cli  # as the gunicorn master does: peewee imports psycopg first
from gevent import monkey
monkey.patch_all()
from psycopg import waiting
from userservice import db
db.connect("postgresql://nobody@127.0.0.1:1/none")
print(waiting.wait.__name__)
"""


def test_connect_makes_psycopg_wait_through_gevent_when_gevent_patched():
    output = subprocess.run([sys.executable, "-c", GEVENT_WORKER], capture_output=True, text=True,
                            timeout=60, check=True).stdout
    assert output.strip() not in ("", "wait_c")


def pooled_connections_settings(app, count, query):
    """Run `query` on `count` connections of the app's pool, all open at once."""
    results, opened, release = [], threading.Barrier(count + 1), threading.Event()

    def hold():
        with db.database.connection_context():
            results.append(db.database.execute_sql(query).fetchone())
            opened.wait(WAIT_GUARD_SECONDS)
            release.wait(WAIT_GUARD_SECONDS)

    threads = [threading.Thread(target=hold) for _ in range(count)]
    for thread in threads:
        thread.start()
    opened.wait(WAIT_GUARD_SECONDS)
    release.set()
    for thread in threads:
        thread.join(WAIT_GUARD_SECONDS)
    return results


SQLITE_SETTINGS = "SELECT * FROM pragma_journal_mode, pragma_synchronous, pragma_foreign_keys, pragma_busy_timeout"
DURABLE_SQLITE = ("wal", 2, 1, 10000)  # synchronous=2 is FULL: every commit is flushed to disk


def test_every_pooled_connection_runs_with_durable_settings(app):
    """A missing flush is invisible to a SIGKILL test: check what each connection runs with."""
    if db.is_sqlite():
        assert pooled_connections_settings(app, 3, SQLITE_SETTINGS) == [DURABLE_SQLITE] * 3
    else:
        settings = pooled_connections_settings(app, 3, "SELECT current_setting('synchronous_commit'), "
                                                       "current_setting('fsync'), current_schema()")
        assert settings == [("on", "on", schema_of(app.config["DATABASE_URL"]))] * 3
