"""userservice.guards, on both backends: forged Host, foreign Origin, non-JSON bodies and
missing or wrong API keys are refused before any view, on every state-changing endpoint
and on the stream, and change nothing; CORS for allowed origins; hostile bodies."""
import http.client
import io
import json
import os
import select
import socket
import stat
import time

import pytest
import requests
import websocket

from conftest import dump_database, parts, raw_exchange
from userservice import create_app

API_KEY = "guards-key-7f3a91"
EVIL = "http://evil.example"

# method, path, JSON body (None: no body); bodies that would succeed without the guard
WRITES = [
    ("post", "/user/select", {"user_id": "auth0|2", "nickname": "eve"}),
    ("post", "/user/clear", None),
    ("get", "/user/refresh", None),
    ("post", "/user/update", "PROFILE"),
    ("post", "/user/beta/status", {"user": "ID"}),
    ("post", "/user/update/vanity", "VANITY"),
    ("post", "/users/authenticate/from_token", {"access_token": "a", "token_type": "Bearer", "expires_in": 1}),
    ("post", "/users/ID/disconnect", None),
    ("post", "/users/ID/select", None),
    ("post", "/os/sign_in", None),
    ("post", "/os/sign_out", None),
    ("post", "/allocations/connect", "PROFILE"),
]
STREAM = ("get", "/user/stream", None)


@pytest.fixture
def signed_in(client):
    response = client.post("/user/select", json={"user_id": "auth0|1", "nickname": "mark"})
    assert response.status_code == 200
    return response.get_json()


def request_for(endpoint, profile):
    method, path, body = endpoint
    if body == "PROFILE":
        body = {**profile, "name": "changed"}
    elif body == "VANITY":
        body = {**profile, "vanityname": "changed"}
    elif isinstance(body, dict) and body.get("user") == "ID":
        body = {"user": profile["id"]}
    return method, path.replace("ID", profile["id"]), body


def database_state(app):
    service = parts(app)
    return service.change_log.position(), service.profiles.listing()


def send(client, endpoint, profile, **kwargs):
    method, path, body = request_for(endpoint, profile)
    if body is not None and "data" not in kwargs:
        kwargs["json"] = body
    return getattr(client, method)(path, **kwargs)


def assert_problem(response, status):
    """Status and type first: a stream that should have been refused must fail the test, not
    hang it by having its endless body read for the failure message."""
    assert (response.status_code, response.mimetype) == (status, "application/problem+json"), \
        next(iter(response.response), b"")[:1000]
    assert response.get_json()["status"] == status


@pytest.mark.parametrize("endpoint", WRITES + [STREAM], ids=lambda e: "%s %s" % e[:2])
@pytest.mark.parametrize("host", ["evil.example", "evil.example:39300", "localhost.evil.example", "127.0.0.1.nip.io"])
def test_forged_host_is_refused_and_changes_nothing(app, client, signed_in, endpoint, host):
    before = database_state(app)
    assert_problem(send(client, endpoint, signed_in, headers={"Host": host}), 403)
    assert database_state(app) == before


@pytest.mark.parametrize("host", ["", "localhost,localhost", "localhost:x", "local host", "localhost\xff"])
def test_invalid_or_several_hosts_are_400(app, client, signed_in, host):
    """RFC 9112 section 3.2: a Host that is no host[:port], or several (joined by commas)."""
    before = database_state(app)
    assert_problem(client.post("/user/clear", headers={"Host": host}), 400)
    assert database_state(app) == before


@pytest.mark.parametrize("host", ["localhost", "localhost:39300", "127.0.0.1:1", "[::1]:39300", "LOCALHOST"])
def test_local_host_names_are_allowed(client, host):
    assert client.get("/user", headers={"Host": host}).status_code == 200


def test_allowed_hosts_is_configurable(app_config, request):
    app_config["ALLOWED_HOSTS"] = "users.example.org, other.example.org"
    client = request.getfixturevalue("app").test_client()
    assert client.get("/user", headers={"Host": "users.example.org"}).status_code == 200
    assert_problem(client.get("/user", headers={"Host": "localhost"}), 403)


@pytest.mark.parametrize("endpoint", WRITES + [STREAM], ids=lambda e: "%s %s" % e[:2])
@pytest.mark.parametrize("origin", [EVIL, "null", "http://localhost:3000"])
def test_foreign_origin_is_refused_and_changes_nothing(app, client, signed_in, endpoint, origin):
    before = database_state(app)
    response = send(client, endpoint, signed_in, headers={"Origin": origin})
    assert_problem(response, 403)
    assert "Access-Control-Allow-Origin" not in response.headers
    assert database_state(app) == before


def test_own_origin_is_allowed(client):
    response = client.post("/user/clear", headers={"Origin": "http://localhost"})
    assert response.status_code == 204


@pytest.mark.parametrize("endpoint", [w for w in WRITES if w[0] == "post"], ids=lambda e: e[1])
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"])
def test_non_json_body_is_refused_and_changes_nothing(app, client, signed_in, endpoint, content_type):
    before = database_state(app)
    response = send(client, endpoint, signed_in, data='{"user_id": "auth0|3"}', content_type=content_type)
    assert_problem(response, 415)
    assert database_state(app) == before


@pytest.fixture
def keyed_client(app_config, request):
    app_config["API_KEY"] = API_KEY
    return request.getfixturevalue("app").test_client()


@pytest.fixture
def keyed_signed_in(keyed_client):
    response = keyed_client.post("/user/select", json={"user_id": "auth0|1"}, headers={"X-API-Key": API_KEY})
    assert response.status_code == 200
    return response.get_json()


@pytest.mark.parametrize("endpoint", WRITES + [STREAM, ("get", "/user", None), ("get", "/users", None),
                                      ("get", "/openapi.json", None), ("get", "/.well-known/version", None),
                                      ("get", "/.well-known/stream/health", None)],
                         ids=lambda e: "%s %s" % e[:2])
@pytest.mark.parametrize("key", [None, "", "wrong", API_KEY + "x", API_KEY[:-1]])
def test_missing_or_wrong_api_key_is_refused_and_changes_nothing(keyed_client, keyed_signed_in, endpoint, key):
    app = keyed_client.application
    before = database_state(app)
    headers = {} if key is None else {"X-API-Key": key}
    response = send(keyed_client, endpoint, keyed_signed_in, headers=headers)
    assert_problem(response, 401)
    assert "WWW-Authenticate" in response.headers
    assert database_state(app) == before


def test_api_key_opens_every_endpoint_but_health_needs_none(keyed_client, keyed_signed_in):
    assert keyed_client.get("/.well-known/health").status_code == 200
    assert keyed_client.get("/user", headers={"X-API-Key": API_KEY}).status_code == 200
    assert keyed_client.post("/user/clear", headers={"X-API-Key": API_KEY}).status_code == 204


def test_api_key_as_query_parameter_is_accepted_only_on_the_stream(keyed_client):
    assert_problem(keyed_client.get("/user?api_key=" + API_KEY), 401)
    response = keyed_client.get("/user/stream?api_key=" + API_KEY)
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    response.close()


def test_preflight_from_allowed_origin_names_methods_and_headers(app_config, request):
    app_config["ALLOWED_ORIGINS"] = ["chrome-extension://abc"]
    client = request.getfixturevalue("app").test_client()
    response = client.options("/user/select", headers={
        "Origin": "chrome-extension://abc", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, x-api-key"})
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "chrome-extension://abc"
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert {"Content-Type", "X-API-Key"} <= set(response.headers["Access-Control-Allow-Headers"].split(", "))
    answer = client.post("/user/select", json={"user_id": "auth0|1"}, headers={"Origin": "chrome-extension://abc"})
    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == "chrome-extension://abc"
    assert "Origin" in answer.headers["Vary"]


@pytest.mark.parametrize("origin, method", [(EVIL, "POST"), ("chrome-extension://abc", "DELETE")])
def test_preflight_is_refused_for_foreign_origins_and_unknown_methods(app_config, request, origin, method):
    app_config["ALLOWED_ORIGINS"] = ["chrome-extension://abc"]
    client = request.getfixturevalue("app").test_client()
    response = client.options("/user/select", headers={"Origin": origin, "Access-Control-Request-Method": method})
    assert_problem(response, 403)
    assert "Access-Control-Allow-Methods" not in response.headers


# --- hostile input ------------------------------------------------------------------------


def test_body_over_the_limit_is_413_before_any_view(app, client, signed_in):
    before = database_state(app)
    body = b'{"user_id": "%s"}' % (b"x" * app.config["MAX_CONTENT_LENGTH"])
    assert_problem(client.post("/user/clear", data=body, content_type="application/json"), 413)
    assert_problem(client.post("/user/select", data=body, content_type="application/json"), 413)
    assert database_state(app) == before


def test_chunked_body_the_server_cannot_delimit_is_411(app, client, signed_in):
    """A WSGI server that neither dechunks nor says it has (wsgi.input_terminated): the body
    could not be read safely, so it is refused instead of being taken as empty."""
    before = database_state(app)
    response = client.post("/user/select", input_stream=io.BytesIO(b'{"user_id": "auth0|9"}'),
                           content_type="application/json", headers={"Transfer-Encoding": "chunked"})
    assert_problem(response, 411)
    assert database_state(app) == before


@pytest.mark.parametrize("body, field", [
    ('{"user_id": "a", "x": %s1%s}' % ("[" * 40, "]" * 40), "x" + ".0" * 32),
    ('{"user_id": "a", "x": %s1%s}' % ("[" * 5000, "]" * 5000), None),
    ('{"user_id": "a", "x": "%s"}' % ("y" * 70000), "x"),
    ('{"user_id": "a", "%s": 1}' % ("k" * 70000), "body"),
    ('{"user_id": "a\\u0000b"}', "user_id"),
    ('{"user_id": "a\\ud800b"}', "user_id"),
])
def test_hostile_json_is_400_naming_the_field(app, client, body, field):
    before = database_state(app)
    response = client.post("/user/select", data=body, content_type="application/json")
    assert_problem(response, 400)
    if field:
        assert [param["name"] for param in response.get_json()["invalid-params"]] == [field]
    assert database_state(app) == before


def test_integral_numbers_are_integers(client, signed_in):
    profile = {**signed_in, "aesthetics": {"theme": {"dark": False}, "font": {"size": 21.0}}}
    response = client.post("/user/update", json=profile)
    assert response.status_code == 200 and response.get_json()["aesthetics"]["font"]["size"] == 21


def test_overlong_path_parameter_is_not_found(client):
    assert_problem(client.get("/users/" + "u" * 256), 404)
    assert_problem(client.get("/users/" + "u" * 255), 404)


def test_sqlite_file_is_readable_by_its_owner_only(sqlite_url, app_config, request):
    app_config["DATABASE_URL"] = sqlite_url
    request.getfixturevalue("app")
    path = sqlite_url[len("sqlite:///"):]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


# --- real servers: the WebSocket handshake, SSE, and a slow body ----------------------------


@pytest.mark.parametrize("path, first", [("/user/stream", "null"), ("/.well-known/stream/health", "ok")])
def test_websocket_handshake_refuses_forged_host_foreign_origin_and_missing_key(database_url, serve, path, first):
    server = serve(database_url, extra_env={"USERSERVICE_API_KEY": API_KEY})
    url = "ws://127.0.0.1:%d%s" % (server.port, path)
    refused = [
        dict(host="evil.example", header={"X-API-Key": API_KEY}),
        dict(origin=EVIL, header={"X-API-Key": API_KEY}),
        dict(header={"X-API-Key": "wrong"}),
        dict(),
    ]
    for options in refused:
        with pytest.raises(websocket.WebSocketBadStatusException) as error:
            websocket.create_connection(url, timeout=5, **options)
        assert error.value.status_code in (401, 403)
    accepted = websocket.create_connection(url + "?api_key=" + API_KEY, timeout=5)
    assert accepted.recv() == first
    accepted.close()


def test_event_stream_refuses_forged_host_and_foreign_origin(database_url, serve):
    server = serve(database_url)
    for headers in ({"Host": "evil.example:%d" % server.port}, {"Origin": EVIL}):
        response = requests.get(server.url + "/user/stream", headers=headers, timeout=5)
        assert response.status_code == 403
        assert response.headers["Content-Type"] == "application/problem+json"


def test_slow_body_does_not_hold_up_other_clients(database_url, serve):
    server = serve(database_url, workers=1)
    slow = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    slow.sendall(b"POST /user/select HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1000\r\n\r\n{\"user_id\": ")
    try:
        for index in range(20):
            slow.sendall(b" ")  # the body trickles in while others are answered
            response = requests.post(server.url + "/user/select", json={"user_id": "auth0|%d" % index}, timeout=5)
            assert response.status_code == 200
            time.sleep(0.05)
    finally:
        slow.close()
    assert len(requests.get(server.url + "/users", timeout=5).json()["iterable"]) == 20


# --- real servers: Host, and bodies in every framing ----------------------------------------

LIMIT = 1000  # MAX_CONTENT_LENGTH of the servers below


@pytest.fixture(params=["gevent"])
def small_bodies(request, database_url, serve):
    """A server with a small body limit and a short body timeout, and its database's rows."""
    server = serve(database_url, args=("--worker-class", request.param),
                   extra_env={"USERSERVICE_MAX_CONTENT_LENGTH": str(LIMIT), "USERSERVICE_BODY_TIMEOUT": "1"})
    observer = create_app({"DATABASE_URL": database_url, "MIGRATE_ON_START": False})
    yield server, lambda: dump_database(observer)
    parts(observer).close()


def request_bytes(server, body, framing):
    """POST /user/select with `body`, framed by Content-Length or in chunks of 300 bytes."""
    head = b"POST /user/select HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n" % server.port
    if framing == "length":
        return head + b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    chunks = [body[start:start + 300] for start in range(0, len(body), 300)]
    return head + b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(
        b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks) + b"0\r\n\r\n"


def padded(size):
    """A valid select body of exactly `size` bytes: JSON, then spaces (still valid JSON)."""
    body = json.dumps({"user_id": "auth0|padded"}).encode()
    return body + b" " * (size - len(body))


def only_answer(answer, status):
    (response,) = answer.responses
    assert (response.status, response.getheader("Content-Type")) == (status, "application/problem+json"), \
        response.body
    assert json.loads(response.body)["status"] == status
    return response


def test_missing_host_on_http_1_1_is_400_and_http_1_0_needs_none(small_bodies):
    server, rows = small_bodies
    before = rows()
    only_answer(raw_exchange(server.port, b"POST /user/clear HTTP/1.1\r\n\r\n"), 400)
    assert rows() == before
    (response,) = raw_exchange(server.port, b"GET /user HTTP/1.0\r\n\r\n").responses
    assert response.status == 200


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_body_over_the_limit_is_413_in_every_framing_and_changes_nothing(small_bodies, framing):
    """The first LIMIT bytes are a valid body: read only that far, it would be accepted."""
    server, rows = small_bodies
    before = rows()
    for size in (LIMIT + 1, 3 * LIMIT):
        only_answer(raw_exchange(server.port, request_bytes(server, padded(size), framing)), 413)
    assert rows() == before
    (response,) = raw_exchange(server.port, request_bytes(server, padded(LIMIT), framing)).responses
    assert response.status == 200, response.body
    assert "Traceback" not in server.output()


MALFORMED_CHUNKS = {
    "size not hex": b"zz\r\n{}\r\n0\r\n\r\n",
    "negative size": b"-2\r\n{}\r\n0\r\n\r\n",
    "data longer than its size": b"2\r\n{} \r\n0\r\n\r\n",
    "no line end after data": b"2\r\n{}0\r\n\r\n",
    "bad extension": b"2;\x01\r\n{}\r\n0\r\n\r\n",
    "bad trailer": b"2\r\n{}\r\n0\r\nno colon\r\n\r\n",
    "ends mid-chunk": b"10\r\n{}",
    "no last chunk": b"2\r\n{}\r\n",
}


def test_malformed_chunked_framing_is_400_problem_never_500(small_bodies):
    server, rows = small_bodies
    before = rows()
    for name, framing in MALFORMED_CHUNKS.items():
        data = (b"POST /user/select HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n" + framing)
        answer = raw_exchange(server.port, data)
        assert [response.status for response in answer.responses] == [400], name
        only_answer(answer, 400)
        assert answer.closed, name
    assert rows() == before
    assert "Traceback" not in server.output()


@pytest.mark.parametrize("small_bodies, framing, trickle", [
    ("gevent", "length", False), ("gevent", "length", True), ("gevent", "chunked", False),
    ("gevent", "chunked", True), ("gthread", "length", True),
], indirect=["small_bodies"], ids=lambda value: {False: "stalled", True: "trickling"}.get(value, value))
def test_body_not_complete_within_body_timeout_is_408_and_the_connection_closed(small_bodies, framing, trickle):
    """A byte every 0.2 s must not keep the read alive: the timeout is for the whole body
    (BODY_TIMEOUT=1 here), not for each read; other clients are answered meanwhile."""
    server, rows = small_bodies
    before = rows()
    data = request_bytes(server, padded(LIMIT), framing)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as slow:
        slow.sendall(data[:len(data) - LIMIT // 2])
        while not select.select([slow], [], [], 0.2)[0]:  # until the server answers
            assert time.monotonic() - started < 3, "no answer in 3 s"
            assert requests.get(server.url + "/user", timeout=2).status_code == 200
            if trickle:
                slow.sendall(b" ")
        response = http.client.HTTPResponse(slow)
        response.begin()
        assert (response.status, response.getheader("Content-Type")) == (408, "application/problem+json")
        assert json.loads(response.read())["status"] == 408
        assert slow.recv(1) == b""  # closed
    assert rows() == before
