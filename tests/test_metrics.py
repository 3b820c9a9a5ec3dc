"""metrics.py: /metrics of a real `userservice serve` with 2 workers, read with
prometheus_client's own parser: the numbers move as requests, streams and commits happen,
and they are the sum over both workers, a worker's within FLUSH_SECONDS and its last ones
when it exits. The request tally adds up to what prometheus_client's own calls record."""
import sys
import threading
import time

import pytest
import requests
import websocket
from hypothesis import given, strategies as st
from prometheus_client.parser import text_string_to_metric_families

from userservice.api.users import USER_ID
from userservice.metrics import FLUSH_SECONDS, LATENCY_BUCKETS, Metrics

API_KEY = "metrics-key-4e1d9c"


def scrape(server, **headers):
    response = requests.get(server.url + "/metrics", headers={"Connection": "close", **headers}, timeout=15)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def eventually(condition, seconds=FLUSH_SECONDS * 5):
    """Whether `condition()` holds within `seconds` (another worker flushes its tally)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def get(server, path, **headers):
    # a connection of its own each time, so that both workers answer some of them
    return requests.get(server.url + path, headers={"Connection": "close", **headers}, timeout=15)


def connections_in_use_settle_to_zero(server, attempts=50):
    """Whether a scrape finds no pooled connection in use within a few seconds: the follower
    of a worker may be reading the log at any one moment (PostgreSQL), but never holds on."""
    for _ in range(attempts):
        if value(scrape(server), "userservice_db_connections", state="in_use") == 0:
            return True
        time.sleep(0.1)
    return False


def test_metrics_count_requests_streams_and_commits_over_both_workers(serve, database_url, tmp_path):
    metrics_dir = tmp_path / "metrics"  # a directory of its own: prometheus_client reads every *.db in it
    metrics_dir.mkdir()
    server = serve(database_url, extra_env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    before = scrape(server)
    for _ in range(40):
        assert get(server, "/user").status_code == 200
    for number in range(5):
        response = requests.post(server.url + "/user/select", json={"user_id": "auth0|%d" % number},
                                 headers={"Connection": "close"}, timeout=15)
        assert response.status_code == 200
    assert get(server, "/users/nobody").status_code == 404
    ok = {"route": "/user", "method": "GET", "status": "200"}
    assert eventually(lambda: value(scrape(server), "userservice_requests_total", **ok)
                      - value(before, "userservice_requests_total", **ok) == 40)
    streams = [websocket.create_connection(server.url.replace("http", "ws") + "/user/stream", timeout=15)
               for _ in range(3)]
    try:
        for stream in streams:
            stream.recv()
        during = scrape(server)
    finally:
        for stream in streams:
            stream.close()
    assert value(during, "userservice_requests_total", route="/users/" + USER_ID,
                 method="GET", status="404") == 1
    assert value(during, "userservice_requests_total", route="/user/select", method="POST", status="200") == 5
    assert value(during, "userservice_request_seconds_count", route="/user") >= 40
    assert value(during, "userservice_streams_open", protocol="websocket") == 3
    writes = value(during, "userservice_group_commit_writes_sum") - value(before, "userservice_group_commit_writes_sum")
    assert writes == 5
    assert connections_in_use_settle_to_zero(server)  # none held while idle
    assert ("userservice_change_feed_lag", ()) in during
    # both workers counted requests, each in a file of its own, and the scrape added them up
    assert len([path for path in metrics_dir.iterdir() if path.name.startswith("counter_")]) == 2


def test_metrics_are_behind_the_api_key(serve, database_url):
    server = serve(database_url, extra_env={"USERSERVICE_API_KEY": API_KEY})
    assert get(server, "/metrics").status_code == 401
    assert value(scrape(server, **{"X-API-Key": API_KEY}), "userservice_streams_open", protocol="sse") == 0


def test_metrics_can_be_switched_off(serve, database_url):
    server = serve(database_url, extra_env={"USERSERVICE_METRICS": "false"})
    assert get(server, "/metrics").status_code == 404
    assert get(server, "/user").status_code == 200


def test_metrics_count_a_workers_last_requests_when_it_exits(serve, database_url, tmp_path):
    """Requests answered just before a shutdown are in the workers' files afterwards, though
    no flush interval passed: each worker flushes its tally on its way out."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    server = serve(database_url, extra_env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    for _ in range(30):
        assert get(server, "/user").status_code == 200
    server.stop()
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics_dir))
    assert registry.get_sample_value("userservice_requests_total",
                                     {"route": "/user", "method": "GET", "status": "200"}) == 30


def samples(metrics):
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in metrics.registry.collect() for sample in family.samples
            if not sample.name.endswith("_created")}


edges = [bound * factor for bound in LATENCY_BUCKETS for factor in (0.5, 1, 1.5)]
requests_answered = st.lists(st.tuples(
    st.sampled_from(["/user", "/users/<user_id:user>", "unmatched"]), st.sampled_from(["GET", "POST"]),
    st.sampled_from([200, 404, 503]),
    st.one_of(st.sampled_from([0.0, 20.0] + edges), st.floats(0, 30, allow_nan=False)),
    st.booleans()), max_size=40)


@given(answered=requests_answered)
def test_request_tally_adds_up_to_what_observe_records(answered):
    """Any requests, with flushes anywhere between them, give the same samples (counts per
    label, each latency bucket, sums) as counting each with prometheus_client's own calls."""
    direct, tallied = Metrics(), Metrics()  # prometheus_client's own calls, and the tally
    for route, method, status, seconds, flush_after in answered:
        direct.requests.labels(route, method, status).inc()
        direct.latency.labels(route).observe(seconds)
        tallied.request_done(route, method, status, seconds)
        if flush_after:
            tallied.tally.flush()
    tallied.tally.flush()
    got, expected = samples(tallied), samples(direct)
    assert got.keys() == expected.keys()
    for key, number in expected.items():
        assert got[key] == pytest.approx(number), key


def test_request_tally_loses_nothing_to_concurrent_threads():
    """Eight threads count and one flushes meanwhile, switching as often as the interpreter
    lets them: every request is in the total."""
    metrics = Metrics()
    switch_interval = sys.getswitchinterval()
    flushing, done = threading.Event(), threading.Event()

    def flush_repeatedly():
        while not done.is_set():
            metrics.tally.flush()
            flushing.set()

    def count():
        flushing.wait(5)
        for _ in range(5000):
            metrics.request_done("/user", "GET", 200, 0.001)

    flusher = threading.Thread(target=flush_repeatedly)
    counters = [threading.Thread(target=count) for _ in range(8)]
    sys.setswitchinterval(1e-6)
    try:
        flusher.start()
        for thread in counters:
            thread.start()
        for thread in counters:
            thread.join()
        done.set()
        flusher.join()
    finally:
        sys.setswitchinterval(switch_interval)
    metrics.tally.flush()
    registry = metrics.registry
    assert registry.get_sample_value("userservice_requests_total",
                                     {"route": "/user", "method": "GET", "status": "200"}) == 40000
    assert registry.get_sample_value("userservice_request_seconds_count", {"route": "/user"}) == 40000


def test_metrics_scrape_includes_its_own_process_at_once():
    """A single process's registry is flushed by its own scrape: nothing waits for a timer."""
    metrics = Metrics()
    metrics.request_done("/user", "GET", 200, 0.002)
    body, _content_type = metrics.exposition()
    assert 'userservice_requests_total{method="GET",route="/user",status="200"} 1.0' in body.decode()
