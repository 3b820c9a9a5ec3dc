"""Many instances on one PostgreSQL past its connection limit: the request pools through
PgBouncer in transaction pooling mode (started by the test), one LISTEN per instance on the
direct URL (the feed relay), and a role capped at a handful of connections."""
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from conftest import feed_relay_pids, postgres_connection, worker_pids
from pgbouncer import connections_of, direct_url
from test_postgres_scaleout import SseReader, WsReader, select, with_font_size

WRITE_TIMEOUT = 40  # longer than any wait inside the service: a hang fails the request


def update(base_url, profile):
    return requests.post(base_url + "/user/update", json=profile, timeout=WRITE_TIMEOUT)


def assert_refused_to_retry(response):
    """A write the service could not carry out: 503 problem+json with Retry-After."""
    assert response.status_code == 503, (response.status_code, response.text)
    assert response.headers["Content-Type"] == "application/problem+json"
    assert int(response.headers["Retry-After"]) >= 1


def retrying(call, attempts=200):
    """Call until it answers other than 503 (each 503 checked): a patient client."""
    for _ in range(attempts):
        response = call()
        if response.status_code != 503:
            return response
        assert_refused_to_retry(response)
        time.sleep(0.1)
    raise AssertionError("still 503 after %d attempts" % attempts)


def subscribe(base_url, kind):
    """A WebSocket or SSE subscriber, retried while the server answers 503."""
    for _ in range(100):
        try:
            return kind(base_url)
        except Exception as error:  # a 503 before the stream started (AssertionError included)
            last = error
            time.sleep(0.1)
    raise AssertionError("no %s subscription: %s" % (kind.__name__, last))


def run_writers(instances, current, writers, steps, during=None):
    """`writers` threads update the current user through every instance in turn, each to
    sizes of its own; `during()` runs once a third of the writes were acknowledged. Returns
    each writer's acknowledged profiles, in the order it sent them, and the 503 count."""
    acknowledged = [[] for _ in range(writers)]
    refused = []
    third = threading.Event()
    total = writers * steps

    def write(writer):
        for step in range(steps):
            profile = with_font_size(current, 1 + writer * steps + step)
            while True:
                response = update(instances[(writer + step) % len(instances)].url, profile)
                if response.status_code == 200:
                    acknowledged[writer].append(response.json())
                    break
                assert_refused_to_retry(response)  # never a 500, never a hang
                refused.append(response)
                time.sleep(0.05)
            if sum(map(len, acknowledged)) >= total // 3:
                third.set()

    with ThreadPoolExecutor(writers) as pool:
        futures = [pool.submit(write, writer) for writer in range(writers)]
        if during is not None:
            assert third.wait(WRITE_TIMEOUT * 2)
            during()
        for future in futures:
            future.result()
    return acknowledged, len(refused)


def assert_every_change_in_order(subscribers, acknowledged, final):
    """Every subscriber received the same changes, ending with `final`; they hold every
    acknowledged write, each writer's in the order it sent them."""
    received = []
    for subscriber in subscribers:
        states = []
        while not states or states[-1] != final:
            states.append(subscriber.next_state())
        received.append(states)
        subscriber.close()
    assert all(states == received[0] for states in received)
    order = {state["aesthetics"]["font"]["size"]: index for index, state in enumerate(received[0])}
    for writes in acknowledged:
        sizes = [write["aesthetics"]["font"]["size"] for write in writes]
        assert all(size in order for size in sizes), "an acknowledged write is missing from the stream"
        assert [order[size] for size in sizes] == sorted(order[size] for size in sizes)


def test_instances_behind_pgbouncer_lose_nothing_when_it_restarts(pgbouncer, fresh_database, serve):
    """Three instances of 2 workers: request pools through PgBouncer (transaction pooling),
    LISTEN and migrations on the direct URL. PgBouncer is restarted while 6 writers update the
    current user: every acknowledged write is kept and every WebSocket and SSE subscriber on
    every instance receives every change, in order."""
    bouncer = pgbouncer()
    database = fresh_database()
    env = {"USERSERVICE_DATABASE_DIRECT_URL": direct_url("postgres", database)}
    instances = [serve(bouncer.url("postgres", database), extra_env=env) for _ in range(3)]
    current = select(instances[0].url, "auth0|bounced")
    subscribers = [subscribe(instance.url, kind) for instance in instances for kind in (WsReader, SseReader)]
    assert all(subscriber.next_state() == current for subscriber in subscribers)

    acknowledged, refused = run_writers(instances, current, writers=6, steps=12, during=bouncer.restart)

    final = retrying(lambda: requests.get(instances[1].url + "/user", timeout=WRITE_TIMEOUT)).json()["user"]
    assert_every_change_in_order(subscribers, acknowledged, final)
    assert bouncer.log().count("process up") == 2, "PgBouncer was not restarted"
    assert listening(database=database) == len(instances)  # the relays', made directly
    print("writes refused with 503 while PgBouncer restarted: %d" % refused)


def test_one_listen_connection_per_instance_not_per_worker(postgres_url, serve):
    """Two instances of 3 workers hold two LISTEN connections, one per instance."""
    name = postgres_url.rpartition("search_path%3D")[2]
    url = "%s&application_name=%s" % (postgres_url, name)
    instances = [serve(url, workers=3) for _ in range(2)]
    subscribers = [SseReader(instance.url) for instance in instances for _ in range(6)]
    assert all(subscriber.next_state() is None for subscriber in subscribers)
    assert all(len(worker_pids(instance)) == 3 and len(feed_relay_pids(instance)) == 1 for instance in instances)
    assert listening(application_name=name + "-listener") == 2
    profile = select(instances[0].url, "auth0|one-listen")
    assert all(subscriber.next_state() == profile for subscriber in subscribers)


def listening(application_name=None, database=None):
    """Connections whose last statement was LISTEN, by application_name or database."""
    with postgres_connection() as connection:
        return connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%%' "
            "AND (%s::text IS NULL OR application_name = %s) AND (%s::text IS NULL OR datname = %s)",
            (application_name, application_name, database, database)).fetchone()[0]


def test_feed_catches_up_after_the_relay_is_killed(postgres_url, serve):
    """The master starts its relay again; workers reconnect to it and read the log."""
    a, b = serve(postgres_url), serve(postgres_url)
    subscribers = [WsReader(b.url), SseReader(b.url)]
    assert all(subscriber.next_state() is None for subscriber in subscribers)
    (relay,) = feed_relay_pids(b)
    os.kill(relay, signal.SIGKILL)
    expected = [select(a.url, "auth0|relay%d" % n) for n in range(3)]
    for subscriber in subscribers:
        assert [subscriber.next_state() for _ in expected] == expected
    deadline = time.monotonic() + 20
    while feed_relay_pids(b) in ([], [relay]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert feed_relay_pids(b) and feed_relay_pids(b) != [relay]
    after = select(a.url, "auth0|relay-after")
    for subscriber in subscribers:
        assert subscriber.next_state() == after
        subscriber.close()


def test_role_capped_at_a_handful_of_connections_serves_everything(limited_role, fresh_database, serve):
    """A role with CONNECTION LIMIT 8 and 3 instances of 3 workers: the old design needed a
    LISTEN connection per worker (9) before any pool. Under concurrent writes every request
    answers 2xx or 503 with Retry-After (never a 500), every subscriber gets every change in
    order, and the role's connections in pg_stat_activity never pass the limit."""
    limit = 8
    role = limited_role(limit)
    database = fresh_database(owner=role)
    url = direct_url(role, database)
    env = {"USERSERVICE_DATABASE_MAX_CONNECTIONS": "1", "USERSERVICE_DATABASE_MAX_IDLE": "0.5"}
    instances = [serve(url, workers=3, extra_env=env) for _ in range(3)]
    peak, sampling = [0], threading.Event()

    def sample():
        while not sampling.is_set():
            peak[0] = max(peak[0], connections_of(user=role))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        current = retrying(lambda: requests.post(instances[0].url + "/user/select",
                                                 json={"user_id": "auth0|capped"}, timeout=WRITE_TIMEOUT)).json()
        subscribers = [subscribe(instance.url, kind) for instance in instances for kind in (WsReader, SseReader)]
        for subscriber in subscribers:
            assert subscriber.next_state() == current
        acknowledged, refused = run_writers(instances, current, writers=8, steps=6)
        final = retrying(lambda: requests.get(instances[2].url + "/user", timeout=WRITE_TIMEOUT)).json()["user"]
        assert_every_change_in_order(subscribers, acknowledged, final)
        for instance in instances:
            assert retrying(lambda: requests.get(instance.url + "/user", timeout=WRITE_TIMEOUT)).ok
    finally:
        sampling.set()
        sampler.join()
    assert 0 < peak[0] <= limit
    print("peak connections of the role: %d of %d; writes refused with 503: %d" % (peak[0], limit, refused))
