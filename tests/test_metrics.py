"""metrics.py: /metrics of a real `userservice serve` with 2 workers, read with
prometheus_client's own parser: the numbers move as requests, streams and commits happen,
and they are the sum over both workers."""
import time

import requests
import websocket
from prometheus_client.parser import text_string_to_metric_families

from userservice.api.users import USER_ID

API_KEY = "metrics-key-4e1d9c"


def scrape(server, **headers):
    response = requests.get(server.url + "/metrics", headers={"Connection": "close", **headers}, timeout=15)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


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
    streams = [websocket.create_connection(server.url.replace("http", "ws") + "/user/stream", timeout=15)
               for _ in range(3)]
    try:
        for stream in streams:
            stream.recv()
        during = scrape(server)
    finally:
        for stream in streams:
            stream.close()
    ok = {"route": "/user", "method": "GET", "status": "200"}
    assert value(during, "userservice_requests_total", **ok) - value(before, "userservice_requests_total", **ok) == 40
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
