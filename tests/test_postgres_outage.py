"""PostgreSQL out of reach: requests answer 503, streams stay open and catch up afterwards.

The outage is real: the service reaches PostgreSQL through a TCP relay that the test cuts
(every connection dropped, new ones refused) and restores.
"""
import contextlib
import socket
import threading
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

from userservice import create_app

from conftest import discard, free_port
from test_postgres_scaleout import SseReader, select_body


class TcpRelay:
    """Forwards a local port to PostgreSQL until cut."""

    def __init__(self, target):
        self.target = target
        self.port = free_port()
        self.sockets = set()
        self.lock = threading.Lock()
        self.server = None
        self.restore()

    def restore(self):
        self.server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self.accept, args=(self.server,), daemon=True).start()

    def accept(self, server):
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.pump, args=(source, sink), daemon=True).start()

    def pump(self, source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                self.shut(end)

    def shut(self, end):
        with contextlib.suppress(OSError):
            end.shutdown(socket.SHUT_RDWR)
        end.close()

    def cut(self):
        self.shut(self.server)  # shutdown wakes the accepting thread; close alone does not
        with self.lock:
            ends, self.sockets = list(self.sockets), set()
        for end in ends:
            self.shut(end)


def through(relay, postgres_url):
    parts = urlsplit(postgres_url)
    netloc = "%s@127.0.0.1:%d" % (parts.username, relay.port)
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
def relay(postgres_url):
    parts = urlsplit(postgres_url)
    relay = TcpRelay((parts.hostname, parts.port or 5432))
    yield relay
    relay.cut()


@pytest.fixture
def relayed_client(relay, postgres_url):
    app = create_app({"TESTING": True, "DATABASE_URL": through(relay, postgres_url)})
    yield app.test_client()
    discard(app)


@pytest.mark.parametrize("method, path, body", [
    ("get", "/user", None),
    ("get", "/users", None),
    ("post", "/user/select", select_body("auth0|outage")),
])
def test_unreachable_database_answers_503_problem(relayed_client, relay, method, path, body):
    assert relayed_client.get("/user").status_code == 200  # a pooled connection exists
    relay.cut()
    response = getattr(relayed_client, method)(path, json=body)
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert problem["status"] == 503 and "unreachable" in problem["detail"]
    assert "Traceback" not in response.get_data(as_text=True)
    assert response.headers["Retry-After"]


def test_requests_succeed_again_when_the_database_returns(relayed_client, relay):
    relayed_client.get("/user")
    relay.cut()
    assert relayed_client.get("/user").status_code == 503
    relay.restore()
    assert relayed_client.post("/user/select", json=select_body("auth0|back")).status_code == 200
    assert relayed_client.get("/user").get_json()["user"]["username"] == "back"


def test_stream_stays_open_and_catches_up_after_an_outage(serve, relay, postgres_url):
    cut_off = serve(through(relay, postgres_url))
    direct = serve(postgres_url, workers=1)
    stream = SseReader(cut_off.url)
    assert stream.next_state() is None
    relay.cut()
    names = ["during%d" % n for n in range(3)]
    for name in names:
        response = requests.post(direct.url + "/user/select", json=select_body("auth0|" + name), timeout=10)
        assert response.status_code == 200
    assert requests.get(cut_off.url + "/user", timeout=10).status_code == 503
    relay.restore()
    assert [stream.next_state()["username"] for _ in names] == names
    stream.close()


def test_not_ready_while_the_database_is_unreachable(relayed_client, relay):
    assert relayed_client.get("/.well-known/ready").status_code == 200
    relay.cut()
    response = relayed_client.get("/.well-known/ready")
    assert response.status_code == 503
    assert "the database is unreachable" in response.get_json()["detail"]
