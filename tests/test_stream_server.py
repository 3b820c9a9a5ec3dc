"""GET /user/stream over a real `userservice serve` (gunicorn), on both backends: WebSocket and
Server-Sent Events subscribers on different workers, concurrent writers, limits, clean-up and
shutdown."""
import http.client
import json
import os
import signal
import socket
import struct
import threading
import time

import pytest
import requests
import websocket
from prometheus_client.parser import text_string_to_metric_families
from pieces_os_client.models.user_profile import UserProfile

from conftest import KeepOpen, assert_stream_slots_free, raw_exchange, worker_of, worker_pids
from userservice import storage

WAIT_SECONDS = 15


# --- clients --------------------------------------------------------------------------------


class Subscriber:
    """A stream client that reads on a thread of its own into `states` (JSON texts)."""

    def __init__(self):
        self.states, self.ids = [], []
        self.ended = threading.Event()
        self.thread = threading.Thread(target=self.read_all, daemon=True)

    def read_all(self):
        try:
            while True:
                self.read_one()
        except Exception:  # the server or the test closed the connection
            self.ended.set()

    def wait_for(self, count):
        deadline = time.monotonic() + WAIT_SECONDS
        while len(self.states) < count and time.monotonic() < deadline and not self.ended.is_set():
            time.sleep(0.02)
        assert len(self.states) >= count, "%s got %d of %d states" % (self, len(self.states), count)
        return self.states[:count]


class WebSocketSubscriber(Subscriber):
    def __init__(self, server):
        super().__init__()
        self.ws = websocket.create_connection(server.url.replace("http", "ws") + "/user/stream",
                                              timeout=WAIT_SECONDS)
        self.port = self.ws.sock.getsockname()[1]
        self.thread.start()

    def read_one(self):
        self.states.append(self.ws.recv())

    def close(self):
        self.ws.close()


class EventSubscriber(Subscriber):
    """Server-Sent Events over http.client, which undoes the chunked encoding."""

    def __init__(self, server, last_event_id=None):
        super().__init__()
        self.connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=WAIT_SECONDS)
        headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
        self.connection.request("GET", "/user/stream", headers=headers)
        self.socket = self.connection.sock  # the response takes it over when it will close
        self.port = self.socket.getsockname()[1]
        self.response = self.connection.getresponse()
        assert self.response.status == 200
        self.thread.start()

    def read_one(self):
        fields = {}
        while (line := self.response.readline().decode()) != "\n":
            if not line:
                raise EOFError()
            name, _, value = line.rstrip("\n").partition(": ")
            fields[name] = value
        if "data" in fields:
            self.ids.append(int(fields["id"]))
            self.states.append(fields["data"])

    def close(self):
        try:  # shut down first: the reading thread holds it
            self.socket.shutdown(socket.SHUT_RDWR)
        except OSError:  # the server has closed it
            pass
        self.connection.close()
        self.socket.close()


class SdkSubscriber(Subscriber):
    """The published SDK 5.x user socket (`pieces_os_client.wrapper.websockets.AuthWS`), as it
    parses frames: `UserProfile.from_json(message)`, and None ("signed out") for anything
    that is not JSON. Here with the 4.0.4 model, since 5.x needs pydantic 2."""

    def __init__(self, server):
        super().__init__()
        self.opened = threading.Event()
        self.app = websocket.WebSocketApp(server.url.replace("http", "ws") + "/user/stream",
                                          on_message=self.on_message, on_open=lambda ws: self.opened.set())
        self.thread = threading.Thread(target=self.app.run_forever, daemon=True)
        self.thread.start()
        assert self.opened.wait(WAIT_SECONDS)

    def on_message(self, _ws, message):
        try:
            self.states.append(UserProfile.from_json(message))
        except json.decoder.JSONDecodeError:
            self.states.append(None)

    def close(self):
        self.app.close()


# --- the server's processes ----------------------------------------------------------------


def usage(pid):
    """(threads, open file descriptors) of a process."""
    with open("/proc/%d/status" % pid) as status:
        threads = next(int(line.split()[1]) for line in status if line.startswith("Threads:"))
    return threads, len(os.listdir("/proc/%d/fd" % pid))


ON_EVERY_WORKER_ATTEMPTS = 200


def on_every_worker(server, open_subscriber, closing):
    """Subscribers of one kind until each worker holds one (gunicorn picks the worker).

    A subscriber landing on a worker that already has one is closed at once: kept open, a
    run of them on one worker could reach its stream limit (small under gthread)."""
    by_worker = {}
    for _attempt in range(ON_EVERY_WORKER_ATTEMPTS):
        subscriber = open_subscriber(server)
        worker = worker_of(server, subscriber.port)
        if worker in by_worker:
            subscriber.close()
            time.sleep(0.02)  # the first worker to wake accepts: give the others a turn
            continue
        closing.append(subscriber)
        by_worker[worker] = subscriber
        if len(by_worker) == len(worker_pids(server)):
            return list(by_worker.values())
    pytest.fail("%d connections did not reach every worker" % ON_EVERY_WORKER_ATTEMPTS)


@pytest.fixture
def closing():
    subscribers = []
    yield subscribers
    for subscriber in subscribers:
        try:
            subscriber.close()
        except OSError:
            pass


# --- writes over fresh connections (so either worker may take each one) ---------------------


def post(server, path, body=None):
    response = requests.post(server.url + path, json=body, headers={"Connection": "close"}, timeout=WAIT_SECONDS)
    assert response.status_code in (200, 204), response.text
    return response.json() if response.content else None


def current_text(server):
    """GET /user's `user` as a stream carries it, or "null"."""
    body = requests.get(server.url + "/user", headers={"Connection": "close"}, timeout=WAIT_SECONDS).text
    return "null" if body == "{}" else body[len('{"user":'):-1]


def streamed_log(database_url, after):
    """(seq, state) of every streamed change after `after`, from the database itself."""
    database = storage.connect(database_url, max_connections=1)
    try:
        with database.connection_context():
            return [tuple(row) for row in database.execute_sql(
                "SELECT seq, state FROM changes WHERE seq > %d AND state IS NOT NULL ORDER BY seq" % after)]
    finally:
        database.close_all()


def log_end(database_url):
    database = storage.connect(database_url, max_connections=1)
    try:
        with database.connection_context():
            return database.execute_sql("SELECT seq FROM state").fetchone()[0]
    finally:
        database.close_all()


# --- across workers -------------------------------------------------------------------------


@pytest.mark.parametrize("worker_class", ["gevent", "gthread"])
def test_stream_subscribers_on_every_worker_receive_the_same_sequence(serve, database_url, closing, worker_class):
    # 64 threads: room for 48 streams per gthread worker, however the connections fall
    server = serve(database_url, args=("--worker-class", worker_class, "--threads", "64"))
    subscribers = (on_every_worker(server, WebSocketSubscriber, closing)
                   + on_every_worker(server, EventSubscriber, closing))
    sdk = SdkSubscriber(server)
    closing.append(sdk)
    expected = ["null"]
    mark = post(server, "/user/select", {"user_id": "auth0|mark", "nickname": "mark"})
    expected.append(current_text(server))
    post(server, "/user/update", {**mark, "username": "marko"})
    expected.append(current_text(server))
    post(server, "/user/select", {"user_id": "auth0|ada", "nickname": "ada"})
    expected.append(current_text(server))
    post(server, "/user/update", {**mark, "username": "mark-not-current"})  # not streamed
    post(server, "/user/clear")
    expected.append(current_text(server))
    for subscriber in subscribers:
        assert subscriber.wait_for(len(expected)) == expected
    profiles = sdk.wait_for(len(expected))
    assert [profile and (profile.id, profile.username) for profile in profiles] == \
        [None, (mark["id"], "mark"), (mark["id"], "marko"), (profiles[3].id, "ada"), None]
    assert profiles[3].id != mark["id"]


def test_stream_concurrent_writers_every_subscriber_gap_free_and_ends_in_the_final_state(
        serve, database_url, closing):
    server = serve(database_url)
    start = log_end(database_url)
    subscribers = (on_every_worker(server, WebSocketSubscriber, closing)
                   + on_every_worker(server, EventSubscriber, closing))
    errors = []

    def write(writer):
        try:
            profile = post(server, "/user/select", {"user_id": "auth0|writer-%d" % writer})
            for number in range(8):
                post(server, "/user/update", {**profile, "username": "w%d-%d" % (writer, number)})
            post(server, "/user/select", {"user_id": "auth0|writer-%d" % writer})
        except AssertionError as error:
            errors.append(error)

    writers = [threading.Thread(target=write, args=(writer,)) for writer in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert not errors
    log = streamed_log(database_url, start)
    final = current_text(server)
    assert log[-1][1] == final
    for subscriber in subscribers:
        states = subscriber.wait_for(1 + len(log))
        assert states[1:] == [state for _, state in log]
        assert states[-1] == final
        if isinstance(subscriber, EventSubscriber):
            assert subscriber.ids == [start] + [seq for seq, _ in log]


def test_stream_sse_resume_on_any_worker_gets_exactly_the_missed_changes(serve, database_url, closing):
    server = serve(database_url)
    first = EventSubscriber(server)
    closing.append(first)
    first.wait_for(1)
    first.close()
    profile = post(server, "/user/select", {"user_id": "auth0|mark"})
    post(server, "/user/update", {**profile, "username": "missed"})
    post(server, "/user/clear")
    resumed = [EventSubscriber(server, last_event_id=first.ids[0]) for _ in range(6)]
    closing.extend(resumed)
    log = streamed_log(database_url, first.ids[0])
    for subscriber in resumed:
        subscriber.wait_for(len(log))
        assert list(zip(subscriber.ids, subscriber.states)) == log


# --- WebSocket specifics --------------------------------------------------------------------


def test_stream_websocket_ignores_what_clients_send(serve, database_url, closing):
    server = serve(database_url, workers=1)
    subscriber = WebSocketSubscriber(server)
    closing.append(subscriber)
    subscriber.wait_for(1)
    for number in range(50):
        subscriber.ws.send("hello %d" % number)
    subscriber.ws.send_binary(b"\x00" * 1000)
    post(server, "/user/select", {"user_id": "auth0|mark"})
    assert subscriber.wait_for(2)[1] == current_text(server)
    assert not subscriber.ended.is_set()


def raw_websocket(server, receive_buffer=None, path="/user/stream"):
    """A WebSocket that never answers pings: a peer that has gone without closing."""
    connection = socket.socket()
    if receive_buffer:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    connection.settimeout(WAIT_SECONDS)
    connection.connect(("127.0.0.1", server.port))
    connection.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n" % (path, server.port)).encode())
    reader = connection.makefile("rb")
    while reader.readline() not in (b"\r\n", b""):
        pass
    return connection, reader


def read_frame(reader):
    """(opcode, payload) of an unmasked server frame, or None at end of stream."""
    head = reader.read(2)
    if len(head) < 2:
        return None
    length = head[1] & 0x7F
    if length >= 126:
        length = int.from_bytes(reader.read(2 if length == 126 else 8), "big")
    return head[0] & 0x0F, reader.read(length)


def test_stream_websocket_pings_and_drops_a_peer_that_does_not_answer(serve, database_url):
    server = serve(database_url, workers=1, extra_env={"USERSERVICE_STREAM_PING_INTERVAL": "0.3"})
    connection, reader = raw_websocket(server)
    opcodes = []
    with connection:
        while (frame := read_frame(reader)) is not None and frame[0] != 0x8:
            opcodes.append(frame[0])
    assert opcodes[0] == 0x1 and 0x9 in opcodes  # the state, then pings, then a close


def client_frame(opcode, payload, fin=True):
    """A masked frame, as clients send them (RFC 6455 section 5.3)."""
    mask, size = os.urandom(4), len(payload)
    length = (struct.pack("!B", 0x80 | size) if size < 126 else struct.pack("!BH", 0x80 | 126, size)
              if size < 1 << 16 else struct.pack("!BQ", 0x80 | 127, size))
    masked = bytes(byte ^ mask[number % 4] for number, byte in enumerate(payload))
    return struct.pack("!B", (0x80 if fin else 0) | opcode) + length + mask + masked


def next_control_frame(reader):
    """The next frame that is not the stream's data (or None at the end of the stream)."""
    while (frame := read_frame(reader)) is not None and frame[0] == 0x1:
        pass
    return frame


WORKER_CLASSES = ["gevent", "gthread"]  # the handler reads its client itself; a thread reads it


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_stream_websocket_answers_a_client_ping_with_its_payload(serve, database_url, worker_class):
    server = serve(database_url, workers=1, args=("--worker-class", worker_class))
    connection, reader = raw_websocket(server)
    with connection:
        assert read_frame(reader) == (0x1, b"null")
        for payload in (b"first", b"", b"third"):
            connection.sendall(client_frame(0x9, payload))
            assert next_control_frame(reader) == (0xA, payload)


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_stream_websocket_client_close_is_answered_and_frees_the_slot(serve, database_url, worker_class):
    server = serve(database_url, workers=1, args=("--worker-class", worker_class),
                   extra_env={"USERSERVICE_STREAM_MAX_SUBSCRIBERS": "1"})
    for _ in range(3):  # each time the one slot is free again
        connection, reader = raw_websocket(server)
        with connection:
            assert read_frame(reader) == (0x1, b"null")
            connection.sendall(client_frame(0x8, struct.pack("!H", 1000) + b"bye"))
            frame = next_control_frame(reader)
            assert frame[0] == 0x8 and int.from_bytes(frame[1][:2], "big") == 1000
            # the server closes the connection after its handler let go of the slot (RFC 6455
            # section 7.1.1: the server closes TCP first)
            assert reader.read() == b""
        assert_stream_slots_free(server, 1)


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
@pytest.mark.parametrize("fragments", [[70_000], [40_000, 40_000]], ids=["whole", "fragmented"])
def test_stream_websocket_message_over_64_kb_closes_with_1009(serve, database_url, worker_class, fragments):
    server = serve(database_url, workers=1, args=("--worker-class", worker_class))
    connection, reader = raw_websocket(server)
    with connection:
        assert read_frame(reader) == (0x1, b"null")
        connection.sendall(client_frame(0x1, b"small"))  # under the limit: ignored
        for number, size in enumerate(fragments):
            last = number == len(fragments) - 1
            connection.sendall(client_frame(0x0 if number else 0x1, b"x" * size, fin=last))
        frame = next_control_frame(reader)
    assert frame[0] == 0x8 and int.from_bytes(frame[1][:2], "big") == 1009


@pytest.mark.parametrize("worker_class, delimited_by", [("gevent", "close"), ("gthread", "chunks")])
def test_stream_sse_carries_the_apps_headers_however_its_body_is_delimited(serve, database_url, worker_class,
                                                                            delimited_by):
    """Under gevent the stream answers on the connection itself (event_stream.py), its body
    delimited by the close; under gthread gunicorn writes it, chunked. Same head, same events."""
    server = serve(database_url, workers=1, args=("--worker-class", worker_class))
    subscriber = EventSubscriber(server)
    try:
        headers = {name.lower(): value for name, value in subscriber.response.getheaders()}
        assert headers["content-type"] == "text/event-stream; charset=utf-8"
        assert headers["cache-control"] == "no-cache" and headers["x-accel-buffering"] == "no"
        assert headers["x-request-id"] and headers["x-userservice-version"]
        if delimited_by == "close":
            assert headers["connection"] == "close" and "transfer-encoding" not in headers
        else:
            assert headers["transfer-encoding"] == "chunked"
        post(server, "/user/select", {"user_id": "auth0|mark"})
        assert subscriber.wait_for(2) == ["null", current_text(server)]
    finally:
        subscriber.close()


def streams_open(server, protocol):
    """The open streams /metrics counts (a live gauge: not held back by the request tally)."""
    text = requests.get(server.url + "/metrics", timeout=WAIT_SECONDS).text
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "userservice_streams_open" and sample.labels["protocol"] == protocol)


@pytest.mark.parametrize("kind", ["sse", "websocket"])
def test_stream_parked_client_that_leaves_is_let_go_at_once(serve, database_url, kind):
    """Under gevent a parked stream watches its connection: a client that closes it ends the
    stream within moments, though no change, beat or full server made it write or look."""
    server = serve(database_url, workers=1, extra_env={"USERSERVICE_STREAM_HEARTBEAT_INTERVAL": "600",
                                                        "USERSERVICE_STREAM_PING_INTERVAL": "600"})
    subscriber = (EventSubscriber if kind == "sse" else WebSocketSubscriber)(server)
    assert subscriber.wait_for(1) == ["null"]
    assert streams_open(server, kind) == 1
    subscriber.close()
    deadline = time.monotonic() + 3
    while streams_open(server, kind) != 0:
        assert time.monotonic() < deadline, "the stream outlived its client"
        time.sleep(0.05)


def test_stream_sse_slow_reader_gets_whole_events_in_order_and_resumes_to_the_last(serve, database_url):
    """A reader with small buffers that reads nothing while large changes pass: what the
    publisher wrote in part is finished before anything else, the stream is ended once its
    queue overflows, and a resume by Last-Event-ID reaches the final state without a gap."""
    server = serve(database_url, workers=1, extra_env={"USERSERVICE_STREAM_QUEUE_SIZE": "2"})
    profile = post(server, "/user/select", {"user_id": "auth0|slow"})
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=WAIT_SECONDS)
    connection.sock = socket.socket()
    connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: its window
    connection.sock.settimeout(WAIT_SECONDS)
    connection.sock.connect(("127.0.0.1", server.port))
    connection.request("GET", "/user/stream")
    response = connection.getresponse()
    first = read_event(response)
    updates = 200  # 200 x 32 KB: more than the kernel's buffers and the queue together
    for number in range(updates):
        post(server, "/user/update", {**profile, "picture": "p" * 16000, "name": "%d-%s" % (number, "n" * 16000)})
    final, ids = current_text(server), [first[0]]
    while (event := read_event(response)) is not None and event[1] != final:
        assert event[0] > ids[-1] and UserProfile.from_json(event[1]).id == profile["id"]  # whole, in order
        ids.append(event[0])
    connection.close()
    response.close()
    assert event is None and len(ids) < updates  # it was ended, not sent everything
    resumed = EventSubscriber(server, last_event_id=ids[-1])
    try:
        while final not in resumed.states:
            resumed.wait_for(len(resumed.states) + 1)
        assert resumed.ids == list(range(ids[-1] + 1, resumed.ids[-1] + 1))  # not a change missed
    finally:
        resumed.close()


def read_event(response):
    """(id, data) of the next event with data, or None at the end of the stream."""
    fields = {}
    while True:
        line = response.readline().decode()
        if not line:
            return None
        if line == "\n":
            if "data" in fields:
                return int(fields["id"]), fields["data"]
            fields = {}
            continue
        name, _, value = line.rstrip("\n").partition(": ")
        fields[name] = value


HANDSHAKE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
             "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


HANDSHAKES_THAT_CANNOT_COMPLETE = [  # version, header left out, headers replaced, status
    ("HTTP/1.1", "Sec-WebSocket-Key", {}, 400),
    ("HTTP/1.1", "Sec-WebSocket-Version", {}, 400),
    ("HTTP/1.1", None, {"Sec-WebSocket-Version": "8"}, 426),
    ("HTTP/1.1", None, {"Sec-WebSocket-Version": "13, 13"}, 426),
    ("HTTP/1.0", "Host", {}, 400),
]


def test_stream_websocket_handshake_that_cannot_complete_is_4xx(serve, database_url):
    server = serve(database_url, workers=1, extra_env={"USERSERVICE_STREAM_MAX_SUBSCRIBERS": "1"})
    for version, left_out, replaced, status in HANDSHAKES_THAT_CANNOT_COMPLETE:
        headers = {"Host": "127.0.0.1", **HANDSHAKE, **replaced}
        headers.pop(left_out, None)
        data = "GET /user/stream %s\r\n%s\r\n" % (version, "".join("%s: %s\r\n" % item for item in headers.items()))
        (response,) = raw_exchange(server.port, data.encode()).responses
        assert (response.status, response.getheader("Content-Type")) == (status, "application/problem+json"), data
        if status == 426:
            assert response.getheader("Sec-WebSocket-Version") == "13"
    assert_stream_slots_free(server, 1)  # no refused handshake kept its slot
    assert "Traceback" not in server.stop()


def test_stream_websocket_negotiates_no_compression(serve, database_url):
    """permessage-deflate would cost ~90 KB per subscriber for frames of a few hundred bytes."""
    server = serve(database_url, workers=1)
    ws = websocket.create_connection(server.url.replace("http", "ws") + "/user/stream", timeout=WAIT_SECONDS,
                                     header=["Sec-WebSocket-Extensions: permessage-deflate"])
    try:
        assert ws.recv() == "null"
        assert "sec-websocket-extensions" not in {name.lower() for name in ws.getheaders()}
    finally:
        ws.close()


# --- limits and resources -------------------------------------------------------------------


def test_stream_beyond_the_limit_is_503_with_retry_after_for_both_protocols(serve, database_url, closing):
    server = serve(database_url, workers=1, extra_env={"USERSERVICE_STREAM_MAX_SUBSCRIBERS": "2"})
    closing.extend([WebSocketSubscriber(server), EventSubscriber(server)])
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(server.url.replace("http", "ws") + "/user/stream", timeout=WAIT_SECONDS)
    assert refused.value.status_code == 503
    assert int(refused.value.resp_headers["retry-after"]) > 0
    response = requests.get(server.url + "/user/stream", timeout=WAIT_SECONDS)
    assert response.status_code == 503
    assert response.headers["Content-Type"] == "application/problem+json"
    assert int(response.headers["Retry-After"]) > 0


def test_stream_idle_handlers_hold_no_database_connection(serve, database_url, closing):
    server = serve(database_url, workers=1, extra_env={"USERSERVICE_DATABASE_MAX_CONNECTIONS": "3"})
    subscribers = [kind(server) for kind in (WebSocketSubscriber, EventSubscriber) for _ in range(8)]
    closing.extend(subscribers)
    for number in range(5):
        post(server, "/user/select", {"user_id": "auth0|user-%d" % number})
    for subscriber in subscribers:
        assert subscriber.wait_for(6)[-1] == current_text(server)


def test_stream_clients_that_leave_free_threads_and_file_descriptors(serve, database_url):
    server = serve(database_url, workers=1, extra_env={"USERSERVICE_STREAM_HEARTBEAT_INTERVAL": "0.5"})
    (worker,) = worker_pids(server)
    warm_up = [WebSocketSubscriber(server), EventSubscriber(server)]
    for subscriber in warm_up:
        subscriber.wait_for(1)
        subscriber.close()
    baseline = settled_usage(worker, lambda value: True, stable_for=3)
    subscribers = [kind(server) for kind in (WebSocketSubscriber, EventSubscriber) for _ in range(100)]
    for subscriber in subscribers:
        subscriber.wait_for(1)
    assert usage(worker)[1] >= baseline[1] + 190  # one socket per subscriber, give or take
    for subscriber in subscribers:
        subscriber.close()
    threads, fds = settled_usage(worker, lambda value: value <= baseline)
    assert threads <= baseline[0] and fds <= baseline[1]  # at most: a keep-alive may have closed


def settled_usage(pid, done, stable_for=2):
    """Usage once it is `done` and the same `stable_for` readings running, or after WAIT_SECONDS."""
    deadline, readings = time.monotonic() + WAIT_SECONDS, []
    while time.monotonic() < deadline:
        readings = readings[1 - stable_for:] + [usage(pid)]
        if done(readings[-1]) and len(readings) == stable_for and len(set(readings)) == 1:
            break
        time.sleep(0.5)
    return readings[-1]


def test_stream_head_holds_no_slot(serve, database_url):
    """HEADs on a connection kept open (so no check of gone clients could free a slot they
    took), plain and with WebSocket upgrade headers: afterwards every slot still opens."""
    server = serve(database_url, workers=1, extra_env={"USERSERVICE_STREAM_MAX_SUBSCRIBERS": "2"})
    head = b"HEAD /user/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    upgrade = (b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_SECONDS) as kept:
        reader = kept.makefile("rb")
        for extra in (b"", upgrade, b"", upgrade):
            kept.sendall(head + extra + b"\r\n")
            response = http.client.HTTPResponse(KeepOpen(reader), method="HEAD")
            response.begin()
            assert (response.status, response.getheader("Content-Type")) == (200, "text/event-stream; charset=utf-8")
        kept.sendall(b"GET /.well-known/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        response = http.client.HTTPResponse(KeepOpen(reader))
        response.begin()
        assert response.read() == b"ok"  # so no HEAD sent a body
        assert_stream_slots_free(server, 2)
    assert "Traceback" not in server.output()


def drop(connection, how):
    """Leave as a client does: reset (a crash, or closed with data unread), closed, or by
    closing its sending side only (the server's reader sees the end and closes the socket)."""
    if how == "reset":
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    if how == "shutdown":
        connection.shutdown(socket.SHUT_WR)
    else:
        connection.close()


def test_stream_websockets_dropped_during_a_delivery_log_no_error_and_free_their_slots(serve, database_url):
    """Clients that read nothing (small buffers) leave while the server is blocked writing to
    them: a departure breaks a write mid-frame, which must end the stream quietly."""
    # room for all 50 on either worker: gunicorn may hand most of the connections to one
    server = serve(database_url, extra_env={"USERSERVICE_STREAM_MAX_SUBSCRIBERS": "50"})
    profile = post(server, "/user/select", {"user_id": "auth0|drop"})
    sockets = []
    for _ in range(50):
        connection, reader = raw_websocket(server, receive_buffer=4096)
        assert read_frame(reader)[0] == 0x1
        reader.close()  # else it keeps the socket open
        sockets.append(connection)
    for number in range(40):  # 40 x 16 KB: more than either side's buffers hold
        post(server, "/user/update", {**profile, "name": "%d-%s" % (number, "n" * 16000)})
    for number, connection in enumerate(sockets):
        drop(connection, ("reset", "close", "shutdown")[number % 3])
    post(server, "/user/update", {**profile, "name": "after"})
    assert_stream_slots_free(server, 50)
    output = server.stop()
    for connection in sockets:
        connection.close()
    print(output); assert "Traceback" not in output and "[ERROR]" not in output, output[-3000:]


def test_stream_websocket_closed_while_a_write_waits_ends_quietly(serve, database_url):
    """Clients that read nothing until the server's writes to them wait for room (4 MB of
    kernel buffers), then leave: the write fails, or the connection's reader closes the
    socket under it, and no error answer may be written to that socket afterwards."""
    server = serve(database_url, workers=1, extra_env={"USERSERVICE_STREAM_MAX_SUBSCRIBERS": "4"})
    profile = post(server, "/user/select", {"user_id": "auth0|stuck"})
    sockets = []
    for _ in range(4):
        connection, reader = raw_websocket(server, receive_buffer=4096)
        read_frame(reader)
        reader.close()
        sockets.append(connection)
    for number in range(160):  # 160 x 32 KB
        post(server, "/user/update", {**profile, "picture": "p" * 16000, "name": "%d-%s" % (number, "n" * 16000)})
    for connection, how in zip(sockets, ("shutdown", "shutdown", "reset", "close")):
        drop(connection, how)
    assert_stream_slots_free(server, 4)
    output = server.stop()
    for connection in sockets:
        connection.close()
    assert "Traceback" not in output and "[ERROR]" not in output, output[-3000:]


@pytest.mark.parametrize("kind", [EventSubscriber, WebSocketSubscriber], ids=["sse", "websocket"])
def test_stream_clients_gone_do_not_keep_a_full_server_from_newcomers(serve, database_url, closing, kind):
    """A closed Server-Sent Events client is otherwise noticed at its next heartbeat (15 s), a
    WebSocket at its handler's next look (1 s): the newcomer comes at once."""
    server = serve(database_url, workers=1, extra_env={"USERSERVICE_STREAM_MAX_SUBSCRIBERS": "2"})
    for subscriber in (kind(server), kind(server)):
        subscriber.wait_for(1)
        subscriber.close()
    newcomer = kind(server)
    closing.append(newcomer)
    assert newcomer.wait_for(1) == ["null"]


def test_stream_websocket_handshake_left_at_once_logs_no_error(serve, database_url):
    server = serve(database_url, workers=1)
    for number in range(30):
        connection = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_SECONDS)
        connection.sendall(("GET /user/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                            "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        drop(connection, "reset" if number % 2 else "close")
    assert requests.get(server.url + "/.well-known/health", timeout=WAIT_SECONDS).ok
    time.sleep(1)
    output = server.stop()
    print(output); assert "Traceback" not in output and "[ERROR]" not in output, output[-3000:]


# --- shutdown ------------------------------------------------------------------------------


@pytest.mark.parametrize("worker_class", ["gevent", "gthread"])
def test_stream_sigterm_ends_open_streams_well_before_graceful_timeout(serve, database_url, worker_class):
    server = serve(database_url, args=("--worker-class", worker_class))
    subscribers = [kind(server) for kind in (WebSocketSubscriber, EventSubscriber) for _ in range(4)]
    for subscriber in subscribers:
        subscriber.wait_for(1)
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(timeout=10)  # gunicorn's graceful_timeout, as `userservice serve` sets it
    assert time.monotonic() - started < 5
    for subscriber in subscribers:
        assert subscriber.ended.wait(WAIT_SECONDS)


# --- what the redesign must not break ---------------------------------------------------------


def test_stream_websocket_lagging_subscriber_is_sent_the_latest_state(serve, database_url):
    """A subscriber that reads nothing while many large changes pass falls behind its queue;
    when it reads again it must reach the latest state, not stall on an old one."""
    server = serve(database_url, workers=1, extra_env={"USERSERVICE_STREAM_QUEUE_SIZE": "2"})
    profile = post(server, "/user/select", {"user_id": "auth0|lag"})
    ws = websocket.create_connection(server.url.replace("http", "ws") + "/user/stream", timeout=WAIT_SECONDS,
                                     sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    try:
        ws.recv()
        updates = 200  # 200 x 32 KB: more than the kernel's buffers and the queue together
        for number in range(updates):
            post(server, "/user/update", {**profile, "picture": "p" * 16000, "name": "%d-%s" % (number, "n" * 16000)})
        final, frames = current_text(server), 0
        while ws.recv() != final:
            frames += 1
        assert frames < updates - 1  # it did fall behind: some states were skipped
    finally:
        ws.close()


@pytest.mark.parametrize("path, first", [("/user/stream", b"null"), ("/.well-known/stream/health", b"ok")])
def test_stream_websocket_shutdown_closes_with_going_away(serve, database_url, path, first):
    server = serve(database_url, workers=1)
    connection, reader = raw_websocket(server, path=path)
    with connection:
        assert read_frame(reader) == (0x1, first)
        server.process.send_signal(signal.SIGTERM)
        while (frame := read_frame(reader)) is not None and frame[0] != 0x8:
            pass
    assert frame is not None, "the connection ended without a close frame"
    assert int.from_bytes(frame[1][:2], "big") == 1001


# --- the health stream PiecesOS clients hold open -------------------------------------------

HEALTH = "/.well-known/stream/health"


def test_health_stream_sends_ok_at_once_and_every_heartbeat_and_stays_open(serve, database_url):
    """PiecesClient holds this socket for as long as it runs: it must outlive pings (which
    the client answers) and heartbeats, saying `ok` each time."""
    server = serve(database_url, workers=1, extra_env={"USERSERVICE_STREAM_HEARTBEAT_INTERVAL": "0.3",
                                                       "USERSERVICE_STREAM_PING_INTERVAL": "0.2"})
    ws = websocket.create_connection(server.url.replace("http", "ws") + HEALTH, timeout=WAIT_SECONDS)
    try:
        started = time.monotonic()
        assert [ws.recv() for _ in range(6)] == ["ok"] * 6
        assert 1.2 < time.monotonic() - started < 5  # five heartbeats apart, not a burst
        assert ws.connected
    finally:
        ws.close()


def test_health_stream_ignores_what_clients_send(serve, database_url):
    server = serve(database_url, workers=1, extra_env={"USERSERVICE_STREAM_HEARTBEAT_INTERVAL": "0.3"})
    ws = websocket.create_connection(server.url.replace("http", "ws") + HEALTH, timeout=WAIT_SECONDS)
    try:
        assert ws.recv() == "ok"
        for number in range(20):
            ws.send("hello %d" % number)
        assert ws.recv() == "ok"
    finally:
        ws.close()


def test_health_stream_counts_against_the_stream_limit(serve, database_url):
    server = serve(database_url, workers=1, extra_env={"USERSERVICE_STREAM_MAX_SUBSCRIBERS": "1"})
    base = server.url.replace("http", "ws")
    for held, refused in ((HEALTH, "/user/stream"), ("/user/stream", HEALTH)):
        ws = websocket.create_connection(base + held, timeout=WAIT_SECONDS)
        try:
            ws.recv()
            with pytest.raises(websocket.WebSocketBadStatusException) as error:
                websocket.create_connection(base + refused, timeout=WAIT_SECONDS)
            assert error.value.status_code == 503
        finally:
            ws.close()
        time.sleep(1.5)  # the handler, woken by the close, frees the slot
