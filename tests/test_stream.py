"""GET /user/stream as Server-Sent Events in process, and the feed behind it, on both backends.

WebSocket and everything across processes is in test_stream_server.py.
"""
import datetime
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from conftest import EventReader, parts

ALLOCATION = {"id": "alloc-1", "user": "u", "project": "proj", "region": "us",
              "status": {"cloud": "RUNNING"},
              "urls": {"base": {"status": "RUNNING", "url": "https://base.pieces.cloud"},
                       "id": {"status": "RUNNING", "url": "https://alloc-1.pieces.cloud"}}}
VISION = {"from": {"value": "2024-01-01T00:00:00+00:00"}, "continuous": True}
ISSUER, AUDIENCE = "https://issuer.example/", "pieces-desktop"
WAIT_SECONDS = 10


@pytest.fixture
def app_config(app_config):
    app_config.update(STREAM_HEARTBEAT_INTERVAL=0.2)
    return app_config


@pytest.fixture
def open_stream(client):
    readers = []

    def open_(**headers):
        response = client.get("/user/stream", headers=headers, buffered=False)
        assert response.status_code == 200, response.get_data(as_text=True)
        readers.append(EventReader(response))
        return readers[-1]

    yield open_
    for reader in readers:
        reader.close()


def select(client, user_id="auth0|1", **fields):
    response = client.post("/user/select", json={"user_id": user_id, **fields})
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def update(client, profile):
    response = client.post("/user/update", json=profile)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def current_state(client):
    """What GET /user holds in `user`, as the stream's JSON value."""
    return client.get("/user").get_json().get("user")


def current_event(client):
    """The event a subscriber must get for the last change: (seq, GET /user's `user` text)."""
    body = client.get("/user").get_data(as_text=True)
    return last_seq(client.application), "null" if body == "{}" else body[len('{"user":'):-1]


def last_seq(app):
    return parts(app).change_log.last_seq()


@pytest.fixture
def signer(app_config, tmp_path):
    """Configures token sign-in with a key of the test's own; returns a function that signs."""
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "k", "alg": "ES256"}]}))
    app_config.update(OIDC_JWKS=str(tmp_path / "jwks.json"), OIDC_ISSUER=ISSUER, OIDC_AUDIENCE=AUDIENCE)

    def sign(subject, name):
        now = datetime.datetime.now(datetime.timezone.utc)
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": subject, "iat": now,
                  "exp": now + datetime.timedelta(minutes=5), "email": "t@x.io", "name": name}
        return jwt.encode(claims, key, algorithm="ES256", headers={"kid": "k"})

    return sign


def authenticate(client, id_token):
    body = {"access_token": "opaque", "token_type": "Bearer", "expires_in": 3600, "id_token": id_token}
    response = client.post("/users/authenticate/from_token", json=body)
    assert response.status_code == 200, response.get_data(as_text=True)


# --- what a subscriber sees ----------------------------------------------------------------


def test_stream_sse_headers_retry_and_current_state_first(client, app, open_stream):
    select(client, nickname="mark")
    reader = open_stream()
    assert reader.response.mimetype == "text/event-stream"
    assert reader.response.headers["Cache-Control"] == "no-cache"
    assert reader.response.headers["X-Accel-Buffering"] == "no"
    seq, data = reader.next_event()
    assert reader.retry > 0
    assert (seq, json.loads(data)) == (last_seq(app), current_state(client))


def test_stream_sse_nobody_signed_in_is_null(open_stream):
    assert open_stream().next_event() == (0, "null")


def test_stream_sse_data_is_get_user_byte_for_byte(client, open_stream):
    reader = open_stream()
    reader.next_event()
    select(client, nickname="mark", email="m@x.io")
    assert reader.next_event() == current_event(client)


def test_stream_sse_heartbeat_comment_while_idle(open_stream):
    reader = open_stream()
    reader.next_event()
    assert next(reader.chunks) == b": keep-alive\n\n"


def select_other(client, _profile):
    select(client, "auth0|2")


def ok(response):
    assert response.status_code in (200, 204), response.get_data(as_text=True)


def select_known(client, profile):
    select(client, "auth0|2")
    ok(client.post("/users/%s/select" % profile["id"]))


def clear(client, _profile):
    ok(client.post("/user/clear"))


def update_current(client, profile):
    update(client, {**profile, "username": "renamed"})


def set_beta(client, profile):
    ok(client.post("/user/beta/status", json={"user": profile["id"], "auth0": {"vision": VISION}}))


def set_vanity(client, profile):
    update(client, {**profile, "allocation": ALLOCATION})
    ok(client.post("/user/update/vanity", json={"id": profile["id"], "vanityname": "markv"}))


def refresh(client, _profile):
    assert client.get("/user/refresh").status_code == 200


def disconnect_current(client, profile):
    ok(client.post("/users/%s/disconnect" % profile["id"]))


def sign_out(client, _profile):
    ok(client.post("/os/sign_out"))


def sign_out_and_in_again(client, _profile):
    ok(client.post("/os/sign_out"))
    ok(client.post("/os/sign_in"))


CHANGES = [select_other, select_known, clear, update_current, set_beta, set_vanity, refresh, disconnect_current,
           sign_out, sign_out_and_in_again]


@pytest.mark.parametrize("change", CHANGES, ids=lambda change: change.__name__)
def test_stream_sse_sends_each_change_of_the_current_user(client, open_stream, change):
    profile = select(client)
    reader = open_stream()
    reader.next_event()
    change(client, profile)
    seq, data = reader.next_event()
    while seq < last_seq(client.application):  # set_vanity makes two changes
        seq, data = reader.next_event()
    assert json.loads(data) == current_state(client)


def test_stream_sse_sends_token_sign_in_of_the_current_user(signer, client, open_stream):
    select(client, "auth0|token")
    reader = open_stream()
    reader.next_event()
    authenticate(client, signer("auth0|token", "New Name"))
    assert json.loads(reader.next_event()[1]) == current_state(client)
    assert current_state(client)["name"] == "New Name"


def test_stream_sse_leaves_out_changes_to_other_users(signer, client, open_stream):
    other = select(client, "auth0|other")
    current = select(client, "auth0|current")
    reader = open_stream()
    first_seq, _ = reader.next_event()
    update(client, {**other, "username": "someone"})
    authenticate(client, signer("auth0|other", "Other Name"))
    client.post("/users/%s/disconnect" % other["id"])
    refresh(client, current)
    seq, data = reader.next_event()
    assert seq == last_seq(client.application) == first_seq + 4
    assert json.loads(data) == current


# --- resume ---------------------------------------------------------------------------------


def make_changes(client, count):
    profile = select(client)
    for number in range(count):
        update(client, {**profile, "username": "name-%d" % number})


def test_stream_sse_resume_gets_exactly_the_missed_changes(client, open_stream):
    profile = select(client)
    reader = open_stream()
    seen, _ = reader.next_event()
    reader.close()
    missed = []
    update(client, {**profile, "username": "missed"})
    missed.append(current_event(client))
    select(client, "auth0|2")
    missed.append(current_event(client))
    update(client, {**profile, "username": "not-current-any-more"})  # not streamed
    client.post("/user/clear")
    missed.append(current_event(client))
    resumed = open_stream(**{"Last-Event-ID": str(seen)})
    assert [resumed.next_event() for _ in missed] == missed
    select(client)
    assert resumed.next_event() == current_event(client)  # then live


def test_stream_sse_resume_at_the_latest_id_sends_nothing_until_a_change(client, app, open_stream):
    make_changes(client, 1)
    reader = open_stream(**{"Last-Event-ID": str(last_seq(app))})
    refresh(client, None)
    assert reader.next_event()[0] == last_seq(app)


@pytest.mark.parametrize("last_event_id", [
    "not-a-number", "999999", "", "-1", "1.5", "0x1", "1 2",
    "\xb2", "\xb9\xb2", "2\xb3",  # superscript digits: str.isdigit() says yes, int() says no
    "9" * 19, "9" * 20, "9" * 5000,  # beyond the int64 seq column; beyond int()'s digit limit
])
def test_stream_sse_unusable_last_event_id_starts_from_current_state(client, app, open_stream, last_event_id):
    make_changes(client, 2)
    seq, data = open_stream(**{"Last-Event-ID": last_event_id}).next_event()
    assert (seq, json.loads(data)) == (last_seq(app), current_state(client))


@pytest.fixture
def short_log(app_config):
    app_config.update(CHANGE_LOG_KEEP=3)


def test_stream_sse_resume_older_than_the_log_starts_from_current_state(short_log, client, app, open_stream):
    make_changes(client, 10)
    seq, data = open_stream(**{"Last-Event-ID": "1"}).next_event()
    assert (seq, json.loads(data)) == (last_seq(app), current_state(client))


def test_stream_sse_resume_of_a_recent_id_survives_pruning(short_log, client, app, open_stream):
    make_changes(client, 10)
    recent = last_seq(app) - 2
    reader = open_stream(**{"Last-Event-ID": str(recent)})
    received = [reader.next_event()[0], reader.next_event()[0]]
    assert received == [recent + 1, recent + 2]


# --- limits ---------------------------------------------------------------------------------


@pytest.fixture
def two_streams_at_most(app_config):
    app_config.update(STREAM_MAX_SUBSCRIBERS=2)


@pytest.mark.parametrize("upgrade", [{}, {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                                          "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}],
                         ids=["sse", "websocket"])
def test_stream_head_has_the_get_headers_and_holds_no_slot(two_streams_at_most, client, app, open_stream, upgrade):
    for _ in range(3):
        head = client.head("/user/stream", headers=upgrade)
        assert (head.status_code, head.data) == (200, b"")
        assert not parts(app).hub.subscribers
    first, _second = open_stream(), open_stream()
    for name in ("Content-Type", "Cache-Control", "X-Accel-Buffering"):
        assert head.headers[name] == first.response.headers[name]
    assert "Content-Length" not in head.headers  # a stream has none, and HEAD must not claim 0


def test_stream_head_on_a_full_server_is_503_like_get(two_streams_at_most, client, open_stream):
    open_stream(), open_stream()
    head = client.head("/user/stream")
    assert head.status_code == 503 and int(head.headers["Retry-After"]) > 0


def test_stream_other_methods_subscribe_to_nothing(two_streams_at_most, client, app, open_stream):
    """On a full server too: OPTIONS answers what the path allows, POST is 405, not 503."""
    open_stream(), open_stream()
    subscribers = set(parts(app).hub.subscribers)
    options = client.options("/user/stream")
    assert options.status_code == 200 and {"GET", "HEAD"} <= set(options.headers["Allow"].split(", "))
    assert client.post("/user/stream").status_code == 405
    assert parts(app).hub.subscribers == subscribers


def test_stream_beyond_the_limit_is_503_with_retry_after(two_streams_at_most, client, open_stream):
    first, _second = open_stream(), open_stream()
    refused = client.get("/user/stream")
    assert refused.status_code == 503
    assert refused.mimetype == "application/problem+json"
    assert int(refused.headers["Retry-After"]) > 0
    first.close()
    assert open_stream().next_event() == (0, "null")


def test_stream_sse_body_closed_unread_or_half_read_frees_its_slot(two_streams_at_most, client, app, open_stream):
    """The server may close the body before reading any of it (a client gone at once)."""
    unread = client.get("/user/stream", buffered=False)
    half_read = client.get("/user/stream", buffered=False)
    next(iter(half_read.response))  # the retry hint
    assert len(parts(app).hub.subscribers) == 2
    unread.close()
    half_read.close()
    assert not parts(app).hub.subscribers
    assert [open_stream().next_event() for _ in range(2)] == [(0, "null")] * 2


# --- what the redesign must not break: lag, catch-up before the first event, pruned edges ---


def read_to_the_end(reader):
    """Every event until the server ends the stream; fails if it is still open after
    WAIT_SECONDS (heartbeats only)."""
    events = []
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        try:
            events.append(reader.next_event())
        except StopIteration:
            return events
    raise AssertionError("the stream did not end within %ss" % WAIT_SECONDS)


@pytest.fixture
def small_queues(app_config):
    app_config.update(STREAM_QUEUE_SIZE=2)


def test_stream_sse_lagging_subscriber_is_ended_and_resumes_without_a_gap(small_queues, client, app, open_stream):
    profile = select(client)
    reader = open_stream()
    seen = [reader.next_event()]
    for number in range(6):  # more than the queue holds, while the reader reads nothing
        update(client, {**profile, "username": "lag-%d" % number})
    seen += read_to_the_end(reader)
    resumed = open_stream(**{"Last-Event-ID": str(seen[-1][0])})
    while seen[-1][0] < last_seq(app):
        seen.append(resumed.next_event())
    assert [seq for seq, _ in seen] == list(range(seen[0][0], last_seq(app) + 1))
    assert seen[-1] == current_event(client)


@pytest.fixture
def slow_polling(app_config):
    """The listener would not look at the log by itself for a long while (SQLite)."""
    app_config.update(STREAM_POLL_INTERVAL=30)


def test_stream_first_event_has_every_write_acknowledged_before_it_connected(
        slow_polling, client, app, open_stream, other_process):
    open_stream().next_event()  # the listener is running and has read the log
    other_process("auth0|elsewhere")
    seq, data = open_stream().next_event()
    assert (seq, data) == current_event(client)
    assert json.loads(data)["name"] == "auth0|elsewhere"


def pruned_log(client, app):
    """Ten changes of the current user with a log that keeps three: (oldest kept, last)."""
    make_changes(client, 10)
    last, oldest, _state = parts(app).change_log.position()
    assert 1 < oldest < last
    return oldest, last


def test_stream_sse_resume_at_the_edge_of_a_pruned_log_gets_every_kept_change(short_log, client, app, open_stream):
    oldest, last = pruned_log(client, app)
    reader = open_stream(**{"Last-Event-ID": str(oldest - 1)})  # its next change is still kept
    assert [reader.next_event()[0] for _ in range(oldest, last + 1)] == list(range(oldest, last + 1))


def test_stream_sse_resume_one_past_the_edge_starts_from_current_state(short_log, client, app, open_stream):
    oldest, last = pruned_log(client, app)
    reader = open_stream(**{"Last-Event-ID": str(oldest - 2)})  # its next change was pruned
    assert reader.next_event() == current_event(client)
