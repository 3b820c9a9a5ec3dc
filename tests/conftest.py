"""Fixtures: every test that takes `app` runs once on SQLite and once on PostgreSQL, each
with a database of its own (a temporary file, or a schema of its own).

Generated tests are bounded for CI by Hypothesis' default profile; run them longer locally
with `pytest --hypothesis-profile=long`."""
import collections
import http.client
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from urllib.parse import quote

import psycopg
import pytest
import requests
from hypothesis import HealthCheck, Phase, settings

from userservice import create_app, extension, migrate

pytest_plugins = ["browser", "pgbouncer"]  # Chromium (tests/browser.py), PgBouncer (tests/pgbouncer.py)

EVENT_WAIT_SECONDS = 10  # how long a stream reader waits for an event before failing

# Generated tests stay bounded in CI (a few hundred steps of a state machine per backend);
# `pytest --hypothesis-profile long` searches far longer, locally. A failure is shrunk and
# reported alone, without the explain phase, which on Python < 3.12 traces every line the
# app runs: either would let a failing run hit the test timeout instead of reporting.
settings.register_profile("ci", max_examples=15, stateful_step_count=25, deadline=None, report_multiple_bugs=False,
                          phases=[phase for phase in Phase if phase is not Phase.explain],
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("long", parent=settings.get_profile("ci"), max_examples=400, stateful_step_count=60)
settings.load_profile("ci")

POSTGRES_URL = os.environ.get("USERSERVICE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgres"]

# Hypothesis' default profile (100 examples per test, and 25 per operation in test_fuzz.py)
# bounds generated tests for CI; `pytest --hypothesis-profile=long` runs every one longer.
settings.register_profile("long", max_examples=3000)


def postgres_connection():
    """An admin connection; in CI a missing PostgreSQL fails the test instead of skipping it."""
    try:
        return psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        message = "PostgreSQL is not reachable at %s: %s" % (POSTGRES_URL, error)
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def fresh_postgres_url(request):
    """A PostgreSQL URL whose search_path is a fresh schema, dropped after the test."""
    schema = "test_" + uuid.uuid4().hex[:12]
    with postgres_connection() as connection:
        connection.execute('CREATE SCHEMA "%s"' % schema)

    def drop():
        with postgres_connection() as connection:
            connection.execute('DROP SCHEMA "%s" CASCADE' % schema)

    request.addfinalizer(drop)
    return "%s?options=%s" % (POSTGRES_URL, quote("-c search_path=%s" % schema))


@pytest.fixture
def postgres_url(request):
    return fresh_postgres_url(request)


@pytest.fixture
def sqlite_url(tmp_path):
    return "sqlite:///%s" % (tmp_path / "userservice.db")


@pytest.fixture(params=BACKENDS)
def database_url(request):
    return request.getfixturevalue("%s_url" % request.param)


@pytest.fixture
def second_database_url(request, database_url, tmp_path):
    """Another empty database on the same backend as `database_url`."""
    if database_url.startswith("sqlite"):
        return "sqlite:///%s" % (tmp_path / "second.db")
    return fresh_postgres_url(request)


@pytest.fixture
def app_config(database_url):
    """What `app` is built from; tests may add to it before asking for `app`."""
    return {"TESTING": True, "DATABASE_URL": database_url, "STREAM_POLL_INTERVAL": 0.01}


@pytest.fixture
def app(app_config):
    app = create_app(app_config)
    yield app
    discard(app)


def discard(app):
    """Stop the app's change-log follower, then close the pool it reads through."""
    parts(app).close()


def parts(app):
    """Everything the app owns: its storage, change log, follower, hub, caches."""
    return app.extensions[extension.EXTENSION]


@pytest.fixture
def service(app):
    return parts(app)


def dump_database(app):
    """Every row of every table, to prove that a refused request wrote nothing."""
    storage = parts(app).storage
    schema = migrate.current_schema(storage)
    with storage.connection():
        return {table: storage.database.execute_sql('SELECT * FROM "%s" ORDER BY 1' % table).fetchall()
                for table in storage.database.get_tables(schema=schema)}


@pytest.fixture
def client(app):
    return app.test_client()


class EventReader:
    """Reads a text/event-stream body from the Flask test client, event by event."""

    def __init__(self, response, wait_seconds=EVENT_WAIT_SECONDS):
        self.response = response
        self.chunks = iter(response.response)
        self.buffer = ""
        self.retry = None
        self.wait_seconds = wait_seconds

    def next_event(self):
        """The next (id, data) event; fails after `wait_seconds` of heartbeats only."""
        deadline = time.monotonic() + self.wait_seconds
        while time.monotonic() < deadline:
            block, separator, rest = self.buffer.partition("\n\n")
            if not separator:
                self.buffer += next(self.chunks).decode()
                continue
            self.buffer = rest
            fields = dict(line.split(": ", 1) for line in block.split("\n") if not line.startswith(":"))
            if not fields:  # a heartbeat comment
                continue
            if "retry" in fields:
                self.retry = int(fields["retry"])
            else:
                return int(fields["id"]), fields["data"]
        raise AssertionError("no event within %ss" % self.wait_seconds)

    def close(self):
        self.response.close()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunningServer:
    """A real `userservice serve` process (gunicorn) on a free port (or `port`, to restart
    one), ready once every worker has booted: a signal sent to a worker still booting would
    be lost (gunicorn's handlers are not installed yet)."""

    health_path = "/.well-known/health"
    cwd = None  # where the command runs

    def __init__(self, database_url, workers=2, extra_env=None, args=(), port=None):
        self.port = port or free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.workers = workers
        env = {**os.environ, "USERSERVICE_DATABASE_URL": database_url, **(extra_env or {})}
        self.process = subprocess.Popen(
            self.command(args), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            cwd=self.cwd)
        self.lines = []
        self.reader = threading.Thread(target=self.read_output, daemon=True)
        self.reader.start()
        try:
            self.wait_until_ready()
        except BaseException:  # a server that never got ready is stopped all the same
            self.stop()
            raise

    def command(self, args):
        return [sys.executable, "-m", "userservice.cli", "serve", "--port", str(self.port),
                "--workers", str(self.workers), *args]

    def booted(self):
        """Every worker has installed its signal handlers (userservice's post_worker_init)."""
        return self.output().count("Worker ready") >= self.workers

    def read_output(self):
        for line in self.process.stdout:
            self.lines.append(line)

    def output(self):
        return "".join(self.lines)

    def wait_until_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.reader.join(5)
                raise RuntimeError("userservice serve exited:\n" + self.output())
            if self.booted() and self.healthy():
                return
            time.sleep(0.05)
        raise RuntimeError("userservice serve was not ready in %ss:\n%s" % (timeout, self.output()))

    def healthy(self):
        try:
            return requests.get(self.url + self.health_path, timeout=1).ok
        except (requests.ConnectionError, requests.Timeout):  # not listening, or still loading
            return False

    def stop(self):
        """Stop the server (SIGTERM, then SIGKILL after 15 s); returns everything it printed."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.reader.join(5)
        return self.output()


def child_pids(server):
    """The master's children, whichever of its threads started them (the feed relay's does)."""
    pids = []
    tasks = "/proc/%d/task" % server.process.pid
    for task in sorted(os.listdir(tasks)):
        try:
            with open(os.path.join(tasks, task, "children")) as children:
                pids.extend(int(pid) for pid in children.read().split())
        except FileNotFoundError:  # a thread that has just ended
            continue
    return pids


def is_feed_relay(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as cmdline:
            return b"userservice.feed_relay" in cmdline.read()
    except FileNotFoundError:
        return False


def worker_pids(server):
    """The master's workers (not its feed relay, on PostgreSQL)."""
    return [pid for pid in child_pids(server) if not is_feed_relay(pid)]


def feed_relay_pids(server):
    return [pid for pid in child_pids(server) if is_feed_relay(pid)]


def socket_inodes(pid):
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def worker_of(server, client_port):
    """The pid of the worker holding the server side of the connection from client_port."""
    with open("/proc/net/tcp") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    inode = next(row[9] for row in rows
                 if int(row[1].split(":")[1], 16) == server.port and int(row[2].split(":")[1], 16) == client_port)
    return next(pid for pid in worker_pids(server) if inode in socket_inodes(pid))


def assert_stream_slots_free(server, per_worker):
    """Open Server-Sent Events streams until every worker holds `per_worker` of them (its
    STREAM_MAX_SUBSCRIBERS): a worker that refuses one before then holds a slot nobody uses.
    gunicorn picks the worker of each connection, so some land on a full one (503 there)."""
    held = {pid: [] for pid in worker_pids(server)}
    connections, responses = [], []
    try:
        for _attempt in range(20 * per_worker * len(held)):
            if all(len(streams) >= per_worker for streams in held.values()):
                return
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            connections.append(connection)
            connection.request("GET", "/user/stream")
            port = connection.sock.getsockname()[1]  # http.client lets go of a socket that will close
            response = connection.getresponse()  # the worker has accepted it: now it can be found
            responses.append(response)  # which holds the socket when it will close
            worker = worker_of(server, port)
            if response.status == 503:
                assert len(held[worker]) >= per_worker, \
                    "worker %d refused a stream while holding %d of ours, of %d" % (
                        worker, len(held[worker]), per_worker)
            else:
                assert response.status == 200, response.status
                held[worker].append(connection)
        pytest.fail("%d connections did not fill every worker" % len(connections))
    finally:
        for connection, response in zip(connections, responses):
            connection.close()
            response.close()


class KeepOpen:
    """A connection's reader that http.client may "close" after each response it reads."""

    def __init__(self, reader):
        self.reader = reader

    def makefile(self, _mode):
        return self

    def __getattr__(self, name):
        return getattr(self.reader, name)

    def close(self):
        pass


RawAnswer = collections.namedtuple("RawAnswer", "responses closed")


def raw_exchange(port, data, method="GET", half_close=True, timeout=10):
    """Send raw request bytes on a new connection and read every response (http.client's
    HTTPResponse, body read) until the server closes it, or a stream starts (101, or
    text/event-stream: its body is not read). With `half_close` the client then sends EOF, as
    one that has said all it will. `closed` tells whether the server closed the connection
    (a wait of `timeout` seconds for more ends it too); an answer that is no HTTP response
    raises http.client's error."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        try:
            connection.sendall(data)
            if half_close:
                connection.shutdown(socket.SHUT_WR)
        except OSError:  # the server answered and closed before it had read everything
            pass
        reader, responses = KeepOpen(connection.makefile("rb")), []
        try:
            while reader.peek(1):
                response = http.client.HTTPResponse(reader, method=method if not responses else "GET")
                response.begin()
                responses.append(response)
                if response.status == 101 or response.getheader("Content-Type", "").startswith("text/event-stream"):
                    return RawAnswer(responses, False)
                response.body = response.read()
                if response.will_close:  # what may follow is no answer (gunicorn's error page to a HEAD)
                    while reader.read(65536):
                        pass
        except TimeoutError:
            return RawAnswer(responses, False)
        except ConnectionResetError:  # closed with bytes of ours unread: closed all the same
            pass
        return RawAnswer(responses, True)


@pytest.fixture
def serve():
    """Start real servers: `serve(database_url, workers=2, extra_env=None, args=(), port=None)`."""
    servers = []

    def start(database_url, **kwargs):
        server = RunningServer(database_url, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


WRITER = textwrap.dedent("""
    import sys
    from userservice import create_app, schemas, store
    app = create_app({"DATABASE_URL": sys.argv[1]})
    with app.app_context():
        print("ready", flush=True)
        for line in sys.stdin:
            store.select_user(schemas.auth0_user.load({"user_id": line.strip(), "name": line.strip()}))
            print("acknowledged", flush=True)
""")


@pytest.fixture
def other_process(database_url):
    """A second process with its own app on the same database, writing when asked."""
    process = subprocess.Popen([sys.executable, "-c", WRITER, database_url], text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdout.readline() == "ready\n"

    def select(user_id):
        process.stdin.write(user_id + "\n")
        process.stdin.flush()
        assert process.stdout.readline() == "acknowledged\n"

    yield select
    process.stdin.close()
    process.wait(10)
