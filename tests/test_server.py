"""server.py and gunicorn.conf.py: `userservice serve` and plain `gunicorn wsgi:app` start the
same way (bind, worker class, hooks), refuse a busy port or an unreachable database with one
line and a non-zero exit, and stop at once with streams open."""
import gc
import http.client
import itertools
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import types

import pytest
from gunicorn import glogging

from conftest import RunningServer, free_port
from test_stream_server import raw_websocket, read_frame
from userservice import config, server
from userservice.server import port_problem

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
SERVE = [os.path.join(BIN, "userservice"), "serve"]
GUNICORN = [os.path.join(BIN, "gunicorn"), "wsgi:app"]


def run(argv, env, timeout=60):
    started = time.monotonic()
    process = subprocess.run(argv, cwd=REPO, env={**os.environ, **env}, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, timeout=timeout)
    return process.returncode, process.stdout, time.monotonic() - started


@pytest.fixture
def busy_port():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


@pytest.mark.parametrize("command", ["serve", "gunicorn"])
def test_busy_port_is_one_line_and_a_non_zero_exit_at_once(command, busy_port, sqlite_url):
    argv = SERVE + ["--port", str(busy_port)] if command == "serve" else GUNICORN + ["-b", "127.0.0.1:%d" % busy_port]
    status, output, seconds = run(argv, {"USERSERVICE_DATABASE_URL": sqlite_url})
    assert status != 0 and seconds < 10, output  # gunicorn alone retries for 5 s, then fails
    errors = [line for line in output.splitlines() if "in use" in line]
    assert errors == ["userservice: cannot listen on 127.0.0.1:%d: the port is in use by another program" % busy_port]
    assert "Traceback" not in output and "on http://" not in output
    if command == "serve":
        assert output.strip() == errors[0]


UNREACHABLE = "postgresql://postgres@127.0.0.1:%d/test?connect_timeout=2"


@pytest.mark.parametrize("command", ["serve", "gunicorn"])
def test_unreachable_database_at_start_is_one_line_and_a_non_zero_exit(command):
    url = UNREACHABLE % free_port()  # nothing listens there
    argv = SERVE + ["--port", str(free_port())] if command == "serve" else GUNICORN + ["-b", "127.0.0.1:%d" % free_port()]
    status, output, _seconds = run(argv, {"USERSERVICE_DATABASE_URL": url})
    assert status != 0, output
    errors = [line for line in output.splitlines() if line.startswith("userservice:")]
    assert len(errors) == 1 and "cannot reach the database postgresql://postgres@127.0.0.1" in errors[0], output
    assert "Traceback" not in output and "Worker failed to boot" not in output
    if command == "serve":
        assert output.strip() == errors[0]


def sse_client(port):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/user/stream")
    response = connection.getresponse()
    assert response.status == 200
    assert response.readline().startswith(b"retry:")
    return connection


def wait_until_free(port, timeout=90):
    """39300 lies in Linux's ephemeral range: a client socket may have used it and left it in
    TIME-WAIT for a minute (.ci/run reserves 39300-39333 so that this does not happen in CI)."""
    deadline = time.monotonic() + timeout
    while port_problem("127.0.0.1:%d" % port) and time.monotonic() < deadline:
        time.sleep(1)


class PlainGunicorn(RunningServer):
    """`gunicorn wsgi:app` from the top of the repository, flags and all left to gunicorn.conf.py."""

    cwd = REPO

    def command(self, args):
        return GUNICORN


def pipelined_selects(port, connection, count):
    """`count` sign-ins sent at once on one connection, each with a request id naming it."""
    requests = []
    for number in range(count):
        body = json.dumps({"user_id": "auth0|c%d" % connection})
        requests.append("POST /user/select HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                        "Content-Length: %d\r\nX-Request-ID: c%d-%d\r\n\r\n%s"
                        % (port, len(body), connection, number, body))
    return "".join(requests).encode()


def test_server_keep_alive_connection_gives_the_others_a_turn_between_writes(serve, sqlite_url):
    """Four connections each send ten writes at once (pipelined, so each next request is
    already there): the worker answers them taking turns, not one connection's ten in a row."""
    server = serve(sqlite_url, workers=1, extra_env={"USERSERVICE_ACCESS_LOG": "true"})
    connections = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(4)]
    try:
        for number, connection in enumerate(connections):
            connection.sendall(pipelined_selects(server.port, number, 10))
        deadline = time.monotonic() + 30
        while len(answered := re.findall(r"POST /user/select 200 .* id=c(\d)-", server.output())) < 40:
            assert time.monotonic() < deadline, "not every write was answered"
            time.sleep(0.05)
    finally:
        for connection in connections:
            connection.close()
    longest_run = max(len(list(run)) for _connection, run in itertools.groupby(answered))
    assert longest_run <= 3, "one connection had %d writes answered in a row: %s" % (longest_run, answered)


class RetiringGunicorn(PlainGunicorn):
    """One worker, which gunicorn replaces after five requests (max_requests): it leaves
    without a SIGTERM."""

    def command(self, args):
        return GUNICORN + ["--bind", "127.0.0.1:%d" % self.port, "--workers", "1", "--max-requests", "5"]


def test_server_worker_retired_by_gunicorn_closes_its_websockets_with_going_away(sqlite_url):
    """worker_exit ends the streams of a worker that leaves on its own: a parked WebSocket,
    which gunicorn no longer holds, is told 1001 instead of being dropped with the process."""
    server = RetiringGunicorn(sqlite_url, workers=1)
    try:
        connection, reader = raw_websocket(server)
        with connection:
            assert read_frame(reader) == (0x1, b"null")
            for _ in range(5):
                answer = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
                answer.request("GET", "/user", headers={"Connection": "close"})
                assert answer.getresponse().status == 200
                answer.close()
            while (frame := read_frame(reader)) is not None and frame[0] != 0x8:
                pass
        assert frame is not None, "the connection ended without a close frame"
        assert int.from_bytes(frame[1][:2], "big") == 1001
    finally:
        server.stop()


def test_gunicorn_wsgi_app_answers_on_39300_and_stops_within_2_s_with_a_stream_open(sqlite_url):
    """Plain `gunicorn wsgi:app`, as `serve` runs: the SDKs' port, the database named at start,
    and a fast shutdown with a Server-Sent Events client open."""
    wait_until_free(39300)
    server = PlainGunicorn(sqlite_url, port=39300)
    try:
        stream = sse_client(39300)
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=10)
        assert time.monotonic() - started < 2
        stream.close()
    finally:
        output = server.stop()
    assert "database: %s" % sqlite_url[len("sqlite:///"):] in output
    assert "on http://127.0.0.1:39300 (gevent, 2 workers)" in output


def test_server_post_worker_init_freezes_what_the_worker_built(app):
    """After the app is built, the collector is told to leave its objects alone (gc.freeze)."""
    worker = types.SimpleNamespace(log=logging.getLogger("test"), pid=os.getpid(), wsgi=app)
    previous = signal.getsignal(signal.SIGTERM)
    gc.unfreeze()
    try:
        server.post_worker_init(worker)
        assert gc.get_freeze_count() > 10000
    finally:
        gc.unfreeze()
        signal.signal(signal.SIGTERM, previous)



def test_server_gunicorn_leaves_the_access_log_to_the_app():
    """gunicorn's logger, as configured, does no work for an access line (the app writes its own)."""
    logger_class = server.gunicorn_settings(config.checked_config())["logger_class"]
    assert issubclass(logger_class, glogging.Logger)
    logger = logger_class.__new__(logger_class)  # nothing set up: an access line must need nothing
    assert logger.access(None, None, {}, None) is None
