"""Debian's PgBouncer, started by a test in front of the machine's PostgreSQL, and databases
and roles of a test's own. In CI (CI=true) a missing pgbouncer fails the test; elsewhere the
test is skipped."""
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid

import psycopg
import pytest

from conftest import POSTGRES_URL, free_port, postgres_connection

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
CONFIG = """\
[databases]
* = host={host} port={port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen_port}
unix_socket_dir =
auth_type = trust
auth_file = {directory}/userlist.txt
pool_mode = transaction
max_client_conn = 2000
default_pool_size = {pool_size}
max_db_connections = {pool_size}
query_wait_timeout = 10
server_login_retry = 1
logfile = {directory}/pgbouncer.log
pidfile = {directory}/pgbouncer.pid
"""


def server_address():
    info = psycopg.conninfo.conninfo_to_dict(POSTGRES_URL)
    return info.get("host", "127.0.0.1"), int(info.get("port", 5432))


class PgBouncer:
    """A PgBouncer process in transaction pooling mode on a free port, configured in a
    temporary folder; `restart` stops it (every client connection dropped) and starts it
    again on the same port."""

    def __init__(self, users, pool_size=20):
        if not os.path.exists(PGBOUNCER):
            message = "pgbouncer is not installed (apt-get install pgbouncer)"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
        self.directory = tempfile.mkdtemp(prefix="userservice-pgbouncer-")
        self.port = free_port()
        host, port = server_address()
        with open(os.path.join(self.directory, "pgbouncer.ini"), "w") as config:
            config.write(CONFIG.format(host=host, port=port, listen_port=self.port, directory=self.directory,
                                       pool_size=pool_size))
        with open(os.path.join(self.directory, "userlist.txt"), "w") as userlist:
            userlist.writelines('"%s" ""\n' % user for user in users)
        self.as_root = os.geteuid() == 0  # PgBouncer refuses to run as root: it runs as nobody
        if self.as_root:
            shutil.chown(self.directory, "nobody")
            os.chmod(self.directory, 0o755)
        self.process = None
        self.start()

    def url(self, user, database):
        return "postgresql://%s@127.0.0.1:%d/%s" % (user, self.port, database)

    def start(self):
        command = [PGBOUNCER, *(["-u", "nobody"] if self.as_root else []),
                   os.path.join(self.directory, "pgbouncer.ini")]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                psycopg.connect(self.url("postgres", "postgres"), connect_timeout=1).close()
                return
            except psycopg.OperationalError:
                time.sleep(0.05)
        raise RuntimeError("pgbouncer did not start:\n" + self.log())

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # fast exit: every connection dropped
            self.process.wait(10)

    def restart(self):
        self.stop()
        self.start()

    def log(self):
        try:
            with open(os.path.join(self.directory, "pgbouncer.log")) as log:
                return log.read()
        except FileNotFoundError:
            return ""

    def close(self):
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def pgbouncer():
    """Start PgBouncers: `pgbouncer(users=("postgres",), pool_size=20)`."""
    started = []

    def start(users=("postgres",), pool_size=20):
        bouncer = PgBouncer(users, pool_size)
        started.append(bouncer)
        return bouncer

    yield start
    for bouncer in started:
        bouncer.close()


def unique_name(prefix):
    return "%s_%s" % (prefix, uuid.uuid4().hex[:10])


def temporary(request, prefix, create, drop):
    """A database object named `prefix_<unique>`, made with the SQL `create` and removed
    after the test with `drop` (both formatted with the name); returns the name."""
    name = unique_name(prefix)
    with postgres_connection() as connection:
        connection.execute(create % name)

    def remove():
        with postgres_connection() as connection:
            connection.execute(drop % name)

    request.addfinalizer(remove)
    return name


@pytest.fixture
def fresh_database(request):
    """Create a database of the test's own (owned by `owner`), dropped after the test with
    whatever is still connected to it; returns its name."""
    return lambda owner="postgres": temporary(
        request, "userservice_test", 'CREATE DATABASE "%%s" OWNER "%s"' % owner,
        'DROP DATABASE IF EXISTS "%s" WITH (FORCE)')


@pytest.fixture
def limited_role(request):
    """A login role with a CONNECTION LIMIT, dropped after the test; returns its name."""
    return lambda limit: temporary(
        request, "userservice_limited", 'CREATE ROLE "%%s" LOGIN CONNECTION LIMIT %d' % limit,
        'DROP ROLE IF EXISTS "%s"')


def direct_url(user, database):
    host, port = server_address()
    return "postgresql://%s@%s:%d/%s" % (user, host, port, database)


def connections_of(user=None, database=None):
    """Client backends connected as `user` (or to `database`), from pg_stat_activity."""
    with postgres_connection() as connection:
        return connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
            "AND (%s::text IS NULL OR usename = %s) AND (%s::text IS NULL OR datname = %s)",
            (user, user, database, database)).fetchone()[0]
