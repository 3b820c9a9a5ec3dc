"""The WSGI fast path of GET /user and GET /users/{user} answers exactly as Flask's path does
(status, headers, body, metrics) for any request, refuses nothing on its own, and never
serves a state older than a write acknowledged before the read. On both backends."""
import json
import re

import pytest
import requests
from hypothesis import HealthCheck, example, given, settings, strategies as st
from werkzeug.test import EnvironBuilder, run_wsgi_app

from userservice import create_app, fast_reads
from userservice.fast_reads import FastReads

from conftest import discard

API_KEY = "fast-reads-key-0123"
ANSWERED_BY_SERVER = {"Date", "Server", "Connection"}  # gunicorn's, on either path


@pytest.fixture
def apps(database_url):
    """Two apps on one database: API key unset, and set."""
    built = {key: create_app({"TESTING": True, "DATABASE_URL": database_url, "API_KEY": key})
             for key in (None, API_KEY)}
    yield built
    for app in built.values():
        discard(app)


@pytest.fixture
def known_user(apps):
    client = apps[None].test_client()
    profile = client.post("/user/select", json={"user_id": "auth0|fast", "name": "Fast"}).get_json()
    return profile["id"]


def environ_for(path="/user", method="GET", host="localhost", key=None, request_id=None, origin=None,
                query="", protocol="HTTP/1.1", content_length=None):
    headers = {}
    if key is not None:
        headers["X-API-Key"] = key
    if request_id is not None:
        headers["X-Request-ID"] = request_id
    if origin is not None:
        headers["Origin"] = origin
    environ = EnvironBuilder(path=path, method=method, headers=headers, query_string=query).get_environ()
    environ["PATH_INFO"] = path  # as the server gives it: the path as sent, percent-decoded
    environ["SERVER_PROTOCOL"] = protocol
    if host is None:
        del environ["HTTP_HOST"]
    else:
        environ["HTTP_HOST"] = host
    if content_length is not None:
        environ["CONTENT_LENGTH"] = content_length
    return environ


def run(wsgi, environ):
    """(status, headers without the generated request id, body), the id masked in the body."""
    iterable, status, headers = run_wsgi_app(wsgi, dict(environ), buffered=True)
    body = b"".join(iterable)
    headers = {name: value for name, value in headers.items() if name not in ANSWERED_BY_SERVER}
    request_id = headers.get("X-Request-ID", "")
    if request_id and request_id != environ.get("HTTP_X_REQUEST_ID"):
        assert re.fullmatch(r"[0-9a-f]{32}", request_id)
        headers["X-Request-ID"] = "generated"
        body = body.replace(request_id.encode(), b"generated")
    return status, headers, body


def both_paths(app, environ):
    fast = app.wsgi_app
    assert isinstance(fast, FastReads)
    run(fast.flask, environ)  # Flask's path first: it fills the cache the fast path answers from
    return run(fast, environ), run(fast.flask, environ)


def requests_count(app, route):
    metrics = app.extensions["userservice"].metrics
    metrics.tally.flush()
    return metrics.registry.get_sample_value(
        "userservice_requests_total", {"route": route, "method": "GET", "status": "200"}) or 0


def test_fast_reads_answers_plain_hot_reads_itself(apps, known_user):
    app = apps[None]
    for path in ("/user", "/users/" + known_user):
        run(app.wsgi_app.flask, environ_for(path))
        answered = app.wsgi_app.answer(environ_for(path), lambda status, headers: None)
        assert answered is not None and json.loads(b"".join(answered))


def test_fast_reads_counts_requests_as_flask_does(apps, known_user):
    app = apps[None]
    for path, route in (("/user", "/user"), ("/users/" + known_user, "/users/<user_id:user>")):
        before = requests_count(app, route)
        run(app.wsgi_app.flask, environ_for(path))
        assert requests_count(app, route) == before + 1
        assert app.wsgi_app.answer(environ_for(path), lambda status, headers: None) is not None
        assert requests_count(app, route) == before + 2


hosts = st.sampled_from([None, "localhost", "localhost:39300", "127.0.0.1", "[::1]:80", "LOCALHOST.",
                         "evil.example", "localhost:x", "a b", "", "localhost, evil.example"])
paths = st.sampled_from(["/user", "/user/", "/users", "/users/", "//user", "/users/unknown", "/users/a/b",
                         "/users/%00", "/users/\x00", "/users/" + "x" * 256, "/users/\xc3\xa9", "/userx",
                         "/users/{known}", "/users/{known}/", "/users/{known}x"])


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=paths, method=st.sampled_from(["GET", "GET", "GET", "HEAD", "POST", "OPTIONS"]), host=hosts,
       key=st.sampled_from([None, API_KEY, "wrong-key-0123", ""]), with_api_key=st.booleans(),
       request_id=st.sampled_from([None, "client-id-1", "bad id!", ""]),
       origin=st.sampled_from([None, "http://localhost", "https://evil.example"]),
       query=st.sampled_from(["", "api_key=" + API_KEY, "x=1"]),
       protocol=st.sampled_from(["HTTP/1.1", "HTTP/1.0"]), content_length=st.sampled_from([None, "0", "2"]))
def test_fast_reads_answers_as_flask_for_any_request(apps, known_user, path, method, host, key, with_api_key,
                                                    request_id, origin, query, protocol, content_length):
    app = apps[API_KEY if with_api_key else None]
    environ = environ_for(path.replace("{known}", known_user), method, host, key, request_id, origin, query,
                          protocol, content_length)
    fast, flask = both_paths(app, environ)
    assert fast == flask


@pytest.mark.parametrize("setting", ["localhost, api.example", ["localhost", "api.example"]])
def test_fast_reads_host_verdicts_follow_the_setting(apps, known_user, setting):
    """A Host's remembered verdict is judged again once ALLOWED_HOSTS changes, whether the
    setting is replaced or a list of it is changed in place."""
    app = apps[None]
    setting = list(setting) if isinstance(setting, list) else setting  # the parameter is shared
    app.config["ALLOWED_HOSTS"] = setting
    environ = environ_for("/users/" + known_user, host="api.example")
    assert both_paths(app, environ)[0][0] == "200 OK"
    if isinstance(setting, list):
        setting.remove("api.example")
    else:
        app.config["ALLOWED_HOSTS"] = "localhost"
    fast, flask = both_paths(app, environ)
    assert fast == flask and fast[0] == "403 FORBIDDEN"
    assert both_paths(app, environ_for("/users/" + known_user))[0][0] == "200 OK"


@pytest.mark.parametrize("host", ["localhost", "evil.example", "localhost:x"])
def test_fast_reads_defer_to_flasks_trusted_hosts(apps, known_user, host):
    """Flask's own TRUSTED_HOSTS, when set, refuses what it does not list: as Flask answers."""
    app = apps[None]
    app.config["TRUSTED_HOSTS"] = ["127.0.0.1"]
    run(app.wsgi_app.flask, environ_for("/users/" + known_user, host="127.0.0.1"))  # cached now
    fast, flask = both_paths(app, environ_for("/users/" + known_user, host=host))
    assert fast == flask and fast[0] == "400 BAD REQUEST"


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=20)
@given(ports=st.lists(st.integers(1, 65535), min_size=1, max_size=300, unique=True))
@example(ports=list(range(1, 3 * fast_reads.HOSTS_REMEMBERED)))
def test_fast_reads_remember_a_bounded_number_of_hosts(apps, known_user, ports):
    """Any number of Host values sent (a port each) keeps at most HOSTS_REMEMBERED verdicts,
    and every one of them is still answered as Flask answers it."""
    app = apps[None]
    for port in ports[:5]:
        fast, flask = both_paths(app, environ_for("/users/" + known_user, host="localhost:%d" % port))
        assert fast == flask and fast[0] == "200 OK"
    for port in ports[5:]:
        app.wsgi_app.host_allowed(environ_for(host="localhost:%d" % port))
    assert len(app.wsgi_app.host_verdicts[1]) <= fast_reads.HOSTS_REMEMBERED


def test_fast_reads_never_stale_after_a_write(apps, known_user, other_process):
    """Writes acknowledged here and by another process are in the very next fast read."""
    client = apps[None].test_client()
    profile = json.loads(client.get("/users/" + known_user).data)
    for number in range(5):
        for repeat in range(2):  # the second read is the fast path's, from the cache
            assert client.get("/user").get_json()["user"].get("username") == profile.get("username")
            assert client.get("/users/" + known_user).get_json().get("username") == profile.get("username")
        profile["username"] = "fast%d" % number
        assert client.post("/user/update", json=profile).status_code == 200
    for number in range(3):
        other_process("auth0|other%d" % number)
        assert client.get("/user").get_json()["user"]["name"] == "auth0|other%d" % number
        other_process("auth0|fast")
        assert client.get("/users/" + known_user).get_json()["name"] == "auth0|fast"


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=10)
@given(names=st.lists(st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1,
                              max_size=20), min_size=1, max_size=8))
def test_fast_reads_read_your_writes_for_any_updates(apps, known_user, names):
    """Any sequence of acknowledged updates, each read back at once through the fast path."""
    client = apps[None].test_client()
    profile = client.get("/users/" + known_user).get_json()
    for name in names:
        client.get("/user")  # cached before the write: the write must move past it
        profile["name"] = name
        assert client.post("/user/update", json=profile).status_code == 200
        assert client.get("/user").get_json()["user"]["name"] == name
        assert client.get("/users/" + known_user).get_json()["name"] == name


def test_fast_reads_through_gunicorn_read_your_writes_across_workers(database_url, serve):
    """Over real HTTP against 2 workers: each acknowledged update is what the next reads get,
    whichever worker answers them."""
    server = serve(database_url)
    profile = requests.post(server.url + "/user/select", json={"user_id": "auth0|http", "name": "Http"}).json()
    with requests.Session() as reader:
        for number in range(30):
            profile["username"] = "http%d" % number
            assert requests.post(server.url + "/user/update", json=profile).status_code == 200
            for _ in range(3):
                answer = reader.get(server.url + "/user")
                assert answer.headers["X-Userservice-Version"] and answer.headers["X-Request-ID"]
                assert answer.json()["user"]["username"] == "http%d" % number
                assert requests.get(server.url + "/users/" + profile["id"]).json()["username"] == "http%d" % number
