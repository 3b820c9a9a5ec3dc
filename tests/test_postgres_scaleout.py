"""Several `userservice serve` instances (standing in for hosts) on one PostgreSQL schema:
one change feed, uniqueness and no lost writes under races. The races also run on SQLite,
with one instance."""
import json
import queue
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote, urlsplit

import pytest
import requests
import websocket

from conftest import postgres_connection

EVENT_TIMEOUT = 30  # seconds a subscriber waits for an event before the test fails


def select_body(user_id):
    return {"user_id": user_id, "nickname": user_id.partition("|")[2]}


class SseReader:
    """An SSE subscriber over a plain HTTP/1.0 socket (no chunking to undo), whose events
    are read in the background into a queue."""

    def __init__(self, base_url):
        address = urlsplit(base_url)
        self.socket = socket.create_connection((address.hostname, address.port), timeout=EVENT_TIMEOUT)
        self.socket.sendall(b"GET /user/stream HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n")
        self.lines = self.socket.makefile("r", encoding="utf-8")
        assert " 200 " in self.lines.readline()
        self.events = queue.Queue()
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        event_id = None
        try:
            for line in self.lines:
                if line.startswith("id: "):
                    event_id = int(line[4:])
                elif line.startswith("data: "):
                    self.events.put((event_id, json.loads(line[6:])))
        except (OSError, ValueError):
            pass  # closed by the test

    def next_event(self):
        return self.events.get(timeout=EVENT_TIMEOUT)

    def next_state(self):
        return self.next_event()[1]

    def close(self):
        self.socket.shutdown(socket.SHUT_RDWR)
        self.socket.close()


class WsReader:
    def __init__(self, base_url):
        self.socket = websocket.create_connection(
            base_url.replace("http://", "ws://") + "/user/stream", timeout=EVENT_TIMEOUT)

    def next_state(self):
        return json.loads(self.socket.recv())

    def close(self):
        self.socket.shutdown()


def subscribe_both_kinds(base_url, each=2):
    """WebSocket and SSE subscribers; several of each, so that both workers are likely hit."""
    return [kind(base_url) for kind in (WsReader, SseReader) for _ in range(each)]


def post(base_url, path, body):
    return requests.post(base_url + path, json=body, timeout=30)


def select(base_url, user_id):
    response = post(base_url, "/user/select", select_body(user_id))
    assert response.status_code == 200, response.text
    return response.json()


def with_font_size(profile, size):
    return {**profile, "aesthetics": {**profile["aesthetics"], "font": {"size": size}}}


@pytest.fixture
def instances(database_url, serve):
    """Two instances of 2 workers on PostgreSQL; one (named twice) on SQLite."""
    first = serve(database_url)
    if database_url.startswith("sqlite"):
        return [first, first]
    return [first, serve(database_url)]


@pytest.fixture
def postgres_instances(postgres_url, serve):
    return [serve(postgres_url), serve(postgres_url)]


def test_change_on_one_instance_reaches_websocket_and_sse_subscribers_on_another(postgres_instances):
    a, b = postgres_instances
    subscribers = subscribe_both_kinds(b.url)
    assert [subscriber.next_state() for subscriber in subscribers] == [None] * len(subscribers)
    profile = select(a.url, "auth0|feed")
    expected = [profile]
    for size in range(10, 15):
        response = post(a.url, "/user/update", with_font_size(profile, size))
        assert response.status_code == 200
        expected.append(response.json())
    assert requests.post(a.url + "/user/clear", timeout=30).status_code == 204
    expected.append(None)
    for subscriber in subscribers:
        assert [subscriber.next_state() for _ in expected] == expected
        subscriber.close()


def test_sse_ids_from_another_instance_increase(postgres_instances):
    a, b = postgres_instances
    reader = SseReader(b.url)
    first_id, _ = reader.next_event()
    for n in range(5):
        select(a.url, "auth0|ids%d" % n)
    ids = [reader.next_event()[0] for _ in range(5)]
    assert ids == sorted(set(ids)) and ids[0] > first_id
    reader.close()


def race(requests_to_send):
    """Send the requests at once (one thread each); returns their statuses in order."""
    barrier = threading.Barrier(len(requests_to_send))

    def send(request):
        base_url, path, body = request
        barrier.wait()
        return post(base_url, path, body).status_code

    with ThreadPoolExecutor(len(requests_to_send)) as pool:
        return list(pool.map(send, requests_to_send))


def test_vanity_race_has_exactly_one_winner(instances):
    a, b = instances
    first, second = select(a.url, "auth0|racer1"), select(a.url, "auth0|racer2")
    for round_number in range(15):
        name = "race-%d" % round_number
        statuses = race([(a.url, "/user/update", {**first, "vanityname": name}),
                         (b.url, "/user/update", {**second, "vanityname": name})])
        assert sorted(statuses) == [200, 409], (round_number, statuses)
        holders = [requests.get("%s/users/%s" % (a.url, user["id"]), timeout=10).json().get("vanityname")
                   for user in (first, second)]
        assert holders.count(name) == 1


ALLOCATION = {"id": "alloc", "user": "u", "project": "p", "status": {"cloud": "RUNNING"},
              "urls": {"base": {"status": "RUNNING", "url": "https://base.pieces.cloud"},
                       "id": {"status": "RUNNING", "url": "https://alloc.pieces.cloud"}}}
ROUNDS = 8


def stored(base_url, user_id):
    return requests.get("%s/users/%s" % (base_url, user_id), timeout=10).json()


def listing(base_url):
    return requests.get(base_url + "/users", timeout=10).json()["iterable"]


def claimants(base_url):
    """Users a, b and c, each with an allocation and a vanity name of its own; b signed in last."""
    users = {}
    for name in "acb":
        profile = select(base_url, "auth0|claim-" + name)
        assert post(base_url, "/user/update", {**profile, "allocation": ALLOCATION}).status_code == 200
        response = post(base_url, "/user/update/vanity", {"id": profile["id"], "vanityname": "own-" + name})
        assert response.status_code == 200, response.text
        users[name] = profile["id"]
    return users


def test_vanity_name_claimed_through_update_vanity_and_sign_in_has_one_holder(instances):
    """a claims through /user/update, b (signed in) through /user/update/vanity, c by signing
    in with it in its user_metadata; c's sign-in also makes c current, so b may get 511."""
    a, b = instances
    users = claimants(a.url)
    for round_number in range(ROUNDS):
        name = "claim-%d" % round_number
        select(b.url, "auth0|claim-b")  # b current again; a sign-in without metadata keeps its name
        statuses = race([
            (a.url, "/user/update", {**stored(a.url, users["a"]), "vanityname": name}),
            (b.url, "/user/update/vanity", {"id": users["b"], "vanityname": name.upper()}),
            (a.url, "/user/select", {"user_id": "auth0|claim-c",
                                      "user_metadata": {"global_id": users["c"], "vanityname": name}}),
        ])
        assert statuses[0] in (200, 409) and statuses[1] in (200, 409, 511) and statuses[2] == 200, statuses
        holders = [user["id"] for user in listing(b.url) if user.get("vanityname") == name]
        url_holders = [user["id"] for user in listing(b.url)
                       if user["allocation"]["urls"].get("vanity", {}).get("url") == "https://%s.pieces.cloud" % name]
        assert len(holders) == 1 and url_holders == holders, (round_number, statuses, holders, url_holders)
        assert [statuses[0] == 200, statuses[1] == 200] == [holders[0] == users["a"], holders[0] == users["b"]]


def test_username_claimed_through_update_and_sign_ins_has_one_holder(instances):
    """a claims through /user/update, b and c by signing in with it as nickname and username:
    exactly one holds it, and neither sign-in fails."""
    a, b = instances
    users = {name: select(a.url, "auth0|claim-" + name)["id"] for name in "abc"}
    for round_number in range(ROUNDS):
        name = "Claim%d" % round_number
        statuses = race([
            (a.url, "/user/update", {**stored(a.url, users["a"]), "username": name}),
            (b.url, "/user/select", {"user_id": "auth0|claim-b", "nickname": name.lower()}),
            (a.url, "/user/select", {"user_id": "auth0|claim-c", "username": name.upper()}),
        ])
        assert statuses[0] in (200, 409) and statuses[1:] == [200, 200], statuses
        holders = [user["id"] for user in listing(b.url) if (user.get("username") or "").lower() == name.lower()]
        assert len(holders) == 1, (round_number, statuses, holders)
        assert (statuses[0] == 200) == (holders[0] == users["a"])


def test_burst_of_updates_loses_no_acknowledged_write(instances):
    """Eight writers, each updating its own user, against both instances; the current
    user's updates must reach every subscriber on both instances in order."""
    writers = 8
    users = [select(instances[0].url, "auth0|burst%d" % n) for n in range(1, writers)]
    current = select(instances[0].url, "auth0|burst0")
    users.insert(0, current)
    subscribers = subscribe_both_kinds(instances[0].url, 1) + subscribe_both_kinds(instances[1].url, 1)
    assert all(subscriber.next_state() == current for subscriber in subscribers)
    sizes = list(range(10, 16))

    def write_all(user_index):
        acknowledged = []
        for step, size in enumerate(sizes):
            response = post(instances[(user_index + step) % 2].url, "/user/update",
                            with_font_size(users[user_index], size))
            assert response.status_code == 200, response.text
            acknowledged.append(response.json())
        return acknowledged

    with ThreadPoolExecutor(writers) as pool:
        acknowledged = list(pool.map(write_all, range(writers)))
    for user, last in zip(users, (writes[-1] for writes in acknowledged)):
        stored = requests.get("%s/users/%s" % (instances[1].url, user["id"]), timeout=10).json()
        assert stored == last
    assert requests.get(instances[1].url + "/user", timeout=10).json() == {"user": acknowledged[0][-1]}
    for subscriber in subscribers:
        assert [subscriber.next_state() for _ in sizes] == acknowledged[0]
        subscriber.close()


def listener_pids(application_name):
    with postgres_connection() as connection:
        return {pid for (pid,) in connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND query LIKE 'LISTEN%%'",
            (application_name,))}


def kill(pids):
    with postgres_connection() as connection:
        for pid in pids:
            connection.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_feed_survives_the_listener_connection_being_killed(postgres_url, serve):
    name = unquote(postgres_url).rpartition("search_path=")[2]
    a = serve(postgres_url)
    b = serve("%s&application_name=%s" % (postgres_url, name))
    subscribers = subscribe_both_kinds(b.url)
    assert all(subscriber.next_state() is None for subscriber in subscribers)
    killed = listener_pids(name + "-listener")
    assert killed
    kill(killed)
    expected = [select(a.url, "auth0|meanwhile%d" % n) for n in range(4)]
    for subscriber in subscribers:
        assert [subscriber.next_state() for _ in expected] == expected
    expected_after = select(a.url, "auth0|after")
    reconnected = listener_pids(name + "-listener")
    assert reconnected and not reconnected & killed
    for subscriber in subscribers:
        assert subscriber.next_state() == expected_after  # nothing doubled before it
        subscriber.close()
