"""/.well-known: what the Python SDK probes to find a server, and the version it reports."""
import pytest

import userservice


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_health_is_ok_as_plain_text(client, method):
    response = client.open("/.well-known/health", method=method)
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.data == (b"ok" if method == "GET" else b"")


def test_version_is_the_package_version(client):
    response = client.get("/.well-known/version")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.get_data(as_text=True) == userservice.__version__


def test_health_other_method_is_405_with_allow(client):
    response = client.post("/.well-known/health")
    assert response.status_code == 405
    assert response.mimetype == "application/problem+json"
    assert set(response.headers["Allow"].split(", ")) >= {"GET", "HEAD"}


def test_unknown_path_is_404_problem(client):
    response = client.get("/.well-known/nothing")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["status"] == 404


# --- readiness: what an orchestrator asks before sending requests ------------------------------


def test_ready_when_database_migrations_and_feed_are_fine(client):
    response = client.get("/.well-known/ready")
    assert (response.status_code, response.mimetype, response.data) == (200, "text/plain", b"ready")


def assert_not_ready(response, reason):
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert int(response.headers["Retry-After"]) > 0
    assert reason in response.get_json()["detail"]


def test_not_ready_while_migrations_are_pending(app_config, request):
    app_config["MIGRATE_ON_START"] = False
    client = request.getfixturevalue("client")
    assert_not_ready(client.get("/.well-known/ready"), "migrations are pending: 0001_initial")


def test_not_ready_when_the_change_feed_has_stopped(client, service):
    assert client.get("/.well-known/ready").status_code == 200  # the follower runs
    service.follower.close()
    assert_not_ready(client.get("/.well-known/ready"), "the change feed is not following")


def test_ready_needs_no_api_key_but_health_and_ready_are_all_it_opens(app_config, request):
    app_config["API_KEY"] = "ready-key-0a9b8c7d"
    client = request.getfixturevalue("client")
    assert client.get("/.well-known/ready").status_code == 200
    assert client.get("/.well-known/version").status_code == 401
