"""userservice.guards, on both backends: forged Host, foreign Origin, non-JSON bodies and
missing or wrong API keys are refused before any view, on every state-changing endpoint
and on the stream, and change nothing; CORS for allowed origins; hostile bodies."""
import os
import socket
import stat
import time

import pytest
import requests
import websocket

from conftest import parts

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
