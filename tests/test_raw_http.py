"""Every request a client can send, as raw bytes on a socket, against a real `userservice serve`
(2 gevent workers), on both backends: generated request lines and methods, header sets with
duplicates, odd bytes, a missing Host, huge values and Last-Event-ID variants, and bodies
framed by Content-Length or chunked, well or badly, over and under the limit, for every route.

Properties: no answer is a 5xx (but the API's own 501 and 511); the server prints no
traceback; the database changes only when an answer was 2xx, and never for HEAD; and once
the connections have closed, every worker still opens as many streams as
STREAM_MAX_SUBSCRIBERS allows.

Out of the generator on purpose: transfer codings other than chunked, which RFC 9112 answers
with 501 (gunicorn does so before the app), and a body sent slowly but complete, which
tests/test_guards.py covers. 100 examples per backend (Hypothesis' default profile); for a long
run, `pytest --hypothesis-profile=long --timeout=0 tests/test_raw_http.py` (3000 per backend).
"""
import http.client
import json
import time

import pytest
import requests
from hypothesis import HealthCheck, given, note, settings, strategies as st

from conftest import assert_stream_slots_free, dump_database, parts, raw_exchange
from userservice import create_app

LIMIT = 2048  # the server's MAX_CONTENT_LENGTH: over and under it, bodies stay small
STREAMS = 3  # STREAM_MAX_SUBSCRIBERS per worker
BODY_TIMEOUT = 1  # seconds; a body that never ends costs an example this long
API_ANSWERS = {501, 511}  # token sign-in not configured, nobody signed in: the API's own 5xx
ROUTES = [
    ("GET", "/user"), ("POST", "/user/select"), ("POST", "/user/clear"), ("GET", "/user/refresh"),
    ("POST", "/user/update"), ("POST", "/user/beta/status"), ("GET", "/user/providers"),
    ("POST", "/user/update/vanity"), ("POST", "/users/authenticate/from_token"), ("GET", "/users"),
    ("GET", "/users/{user}"), ("POST", "/users/{user}/disconnect"), ("GET", "/user/stream"),
    ("GET", "/.well-known/health"), ("GET", "/.well-known/version"), ("GET", "/openapi.json"),
]
USER_ID = "c1b2c4d5-0000-5000-8000-000000000001"  # auth0|1's id (user_metadata.global_id)
WEBSOCKET = [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"), (b"Sec-WebSocket-Version", b"13"),
             (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ==")]


def latin1(min_size=0, max_size=40):
    """Header or path bytes: anything but CR and LF, which would end the line."""
    return st.binary(min_size=min_size, max_size=max_size).map(
        lambda value: value.replace(b"\r", b"").replace(b"\n", b""))


# What may be odd about a request. Most examples are well formed (so that they reach the
# application and its writes), the others have one to three oddities: small enough to shrink.
ODDITIES = ("method", "target", "version", "host", "content type", "headers", "duplicate", "framing",
            "body", "last event id", "websocket")

odd_methods = st.sampled_from([b"HEAD", b"GET", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE",
                               b"get", b"G\xffT"])
odd_versions = st.sampled_from([b"HTTP/1.0", b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0", b"HTTP/1", b"http/1.1"])
odd_user_ids = st.one_of(
    st.sampled_from(["nobody", "%00", "%ff%fe", "a%2Fb", "..", "%ED%A0%80", "u" * 256, "%C2%B2"]),
    st.text(max_size=20).map(lambda text: "".join("%%%02X" % byte for byte in text.encode())),
)
odd_targets = st.one_of(
    st.sampled_from(["?api_key=x&a=%ff", "ABSOLUTE"]),
    st.sampled_from(["*", "/", "/nothing", "//user", "/user/", "/user/../users"]),
    latin1(1, 30).map(lambda junk: "/" + junk.decode("latin-1")),
)
odd_hosts = st.lists(st.one_of(
    st.sampled_from([b"[::1]:1", b"evil.example", b"", b"127.0.0.1:x", b"localhost, evil.example",
                     b"127.0.0.1\xff", b"L" * 9000, b"localhost"]),
    latin1(),
), max_size=2)  # none, one odd, or two
odd_content_types = st.sampled_from([None, b"application/json; charset=utf-8", b"application/merge-patch+json",
                                     b"text/plain", b"application/json\xff", b"multipart/form-data; boundary=x"])
odd_headers = st.lists(st.tuples(
    st.one_of(st.sampled_from([b"Origin", b"X-API-Key", b"Expect", b"Content-Type", b"Connection", b"Upgrade",
                               b"X_Under_Score", b"SCRIPT_NAME", b"PATH_INFO", b"Content-Length"]),
              st.text("abcdefghijklmnopqrstuvwxyz-!#$%&'*+.^_`|~0123456789", min_size=1, max_size=12)
              .map(str.encode)),
    st.one_of(st.sampled_from([b"http://evil.example", b"http://127.0.0.1", b"null", b"100-continue", b"close",
                               b"keep-alive", b"websocket", b"text/plain", b"/x", b"", b"-1"]),
              latin1(), st.integers(1, 20000).map(lambda size: b"v" * size)),
), min_size=1, max_size=3)
last_event_ids = st.one_of(
    st.integers(-5, 10 ** 25).map(lambda number: str(number).encode()),
    st.sampled_from([b"", b" 1 ", b"\xb2", b"\xc2\xb2", b"\xb9\xb2", b"1.0", b"0x1", b"9" * 5000]),
    latin1(),
)


@st.composite
def json_bodies(draw, path):
    """A body the route accepts, or (odd) other JSON; either sometimes padded with spaces
    (the same JSON) to just under, at or over the limit."""
    valid = {
        "/user/select": st.one_of(
            st.fixed_dictionaries({"user_id": st.just("auth0|1"), "user_metadata": st.just({"global_id": USER_ID})},
                                  optional={"nickname": st.text(max_size=10), "email": st.text(max_size=10)}),
            st.fixed_dictionaries({"user_id": st.just("auth0|2")})),
        "/user/beta/status": st.fixed_dictionaries({"user": st.just(USER_ID)},
                                                   optional={"auth0": st.just({"vision": {"continuous": True}})}),
        "/users/authenticate/from_token": st.fixed_dictionaries(
            {"access_token": st.just("a"), "token_type": st.just("Bearer"), "expires_in": st.integers(0, 10)}),
    }.get(path, st.fixed_dictionaries({"id": st.just(USER_ID)}, optional={"vanityname": st.text(max_size=8)}))
    body = draw(st.one_of(valid, st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=8)))
    text = json.dumps(body).encode()
    size = draw(st.sampled_from([None, None, LIMIT - 1, LIMIT, LIMIT + 1, 2 * LIMIT]))
    return text if size is None or size < len(text) else text + b" " * (size - len(text))


odd_bodies = st.one_of(st.binary(max_size=64), st.binary(min_size=LIMIT - 2, max_size=LIMIT + 2))


@st.composite
def chunked(draw, body):
    """The body in chunks, with good framing or one fault, and whether the body is cut off."""
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
    pieces = [body[start:end] for start, end in zip([0] + cuts, cuts + [len(body)]) if end > start]
    frames = [b"%x%s\r\n%s\r\n" % (len(piece), draw(st.sampled_from([b"", b";a=b"])), piece) for piece in pieces]
    frames.append(b"0\r\n" + draw(st.sampled_from([b"", b"X-Trailer: 1\r\n"])) + b"\r\n")
    fault = draw(st.sampled_from([None, None, "size", "terminator", "truncated", "huge", "extension", "trailer"]))
    if fault == "size":
        frames.insert(0, draw(st.sampled_from([b"zz", b"-1", b" ", b"0x2", b"\xb2"])) + b"\r\nab\r\n")
    elif fault == "terminator":
        frames[0] = frames[0][:-2]
    elif fault == "truncated":
        frames = frames[:-1]
    elif fault == "huge":
        frames.insert(0, b"ffffffffffffffff\r\n")
    elif fault == "extension":
        frames.insert(0, b"1;\x01\r\na\r\n")
    elif fault == "trailer":
        frames[-1] = b"0\r\nno colon here\r\n\r\n"
    return b"".join(frames), fault == "truncated"


@st.composite
def framed(draw, body, framing):
    """(framing headers, body bytes, whether the client then stops sending: EOF)."""
    if framing == "none":
        return [], b"", True
    if framing == "chunked":
        data, truncated = draw(chunked(body))
        stalls = truncated and draw(st.booleans())  # stalled: no EOF, no end: 408 awaits it
        return [(b"Transfer-Encoding", draw(st.sampled_from([b"chunked", b"Chunked"])))], data, not stalls
    length = [(b"Content-Length", str(len(body)).encode())]
    if framing == "both":
        return length + [(b"Transfer-Encoding", b"chunked")], body, True
    if framing == "short":  # the body stops early: EOF, or a stall
        return length, body[:len(body) // 2], draw(st.booleans())
    if framing == "long":  # more than the length: the rest is read as a next request
        return [(b"Content-Length", str(len(body) // 2).encode())], body, True
    return length, body, True


@st.composite
def raw_requests(draw, port):
    """(method, the request's bytes, whether the client sends EOF after them)."""
    route_method, path = draw(st.sampled_from(ROUTES))
    odd = draw(st.one_of(*[st.just(frozenset())] * 3, st.frozensets(st.sampled_from(ODDITIES), min_size=1, max_size=3)))
    method = draw(odd_methods) if "method" in odd else route_method.encode()
    target = path.replace("{user}", draw(odd_user_ids) if "target" in odd else USER_ID)
    if "target" in odd:
        extra = draw(odd_targets)
        target = "http://127.0.0.1" + target if extra == "ABSOLUTE" else target + extra if extra[0] == "?" else extra
    version = draw(odd_versions) if "version" in odd else b"HTTP/1.1"
    hosts = draw(odd_hosts) if "host" in odd else [b"127.0.0.1:%d" % port]
    headers = [(b"Host", host) for host in hosts]
    sends_body = route_method == "POST" or "body" in odd
    content_type = draw(odd_content_types) if "content type" in odd else b"application/json" if sends_body else None
    if content_type:
        headers.append((b"Content-Type", content_type))
    if path == "/user/stream" and "last event id" in odd:
        headers.append((b"Last-Event-ID", draw(last_event_ids)))
    if path == "/user/stream" and "websocket" in odd:
        headers.extend(draw(st.lists(st.sampled_from(WEBSOCKET), min_size=2, max_size=4, unique=True)))
    if "headers" in odd:
        headers.extend(draw(odd_headers))
    body = draw(odd_bodies if "body" in odd and draw(st.booleans()) else json_bodies(path))
    framing = draw(st.sampled_from(["length", "chunked", "both", "short", "long", "none"]) if "framing" in odd
                   else st.sampled_from(["length", "chunked"] if sends_body else ["none"]))
    framing_headers, data, eof = draw(framed(body, framing))
    headers = draw(st.permutations(headers + framing_headers))
    if headers and "duplicate" in odd:
        headers.append(draw(st.sampled_from(headers)))
    head = b"%s %s %s\r\n" % (method, target.encode("latin-1"), version)
    head += b"".join(b"%s: %s\r\n" % header for header in headers)
    return method, head + b"\r\n" + data, eof


@pytest.fixture
def fuzzed(database_url, serve):
    """The server, and an app of the test's own on its database, to read every row."""
    server = serve(database_url, extra_env={
        "USERSERVICE_MAX_CONTENT_LENGTH": str(LIMIT), "USERSERVICE_STREAM_MAX_SUBSCRIBERS": str(STREAMS),
        "USERSERVICE_BODY_TIMEOUT": str(BODY_TIMEOUT)})
    observer = create_app({"DATABASE_URL": database_url, "MIGRATE_ON_START": False})
    select = requests.post(server.url + "/user/select", timeout=10,
                           json={"user_id": "auth0|1", "user_metadata": {"global_id": USER_ID}})
    assert select.status_code == 200, select.text
    yield server, observer
    parts(observer).close()


def exchange(server, method, data, eof):
    """The statuses of every answer on the connection; fails on bytes that are no answer."""
    try:
        answer = raw_exchange(server.port, data, method=method.decode("latin-1"), half_close=eof,
                              timeout=BODY_TIMEOUT + 4)
    except http.client.HTTPException as error:
        pytest.fail("an answer that is no HTTP response: %r" % error)
    return [response.status for response in answer.responses]


def test_raw_requests_never_5xx_trace_or_write_when_refused_and_leave_every_stream_slot(fuzzed):
    server, observer = fuzzed
    seen = {"printed": 0}

    @given(request=raw_requests(server.port))
    @settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    def one_request(request):
        method, data, eof = request
        note("sent%s: %r" % (" then EOF" if eof else "", data))
        before = dump_database(observer)
        statuses = exchange(server, method, data, eof)
        assert all(status < 500 or status in API_ANSWERS for status in statuses), statuses
        if method == b"HEAD" or not any(200 <= status < 300 for status in statuses):
            assert dump_database(observer) == before, statuses
        time.sleep(0.01)  # for what the server prints once the connection has closed
        printed = server.output()[seen["printed"]:]
        seen["printed"] += len(printed)
        assert "Traceback" not in printed, printed

    one_request()
    assert_stream_slots_free(server, STREAMS)
    assert "Traceback" not in server.output()
