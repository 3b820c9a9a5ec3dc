"""/.well-known: what the Python SDK probes to find a server, and the version it reports."""
import pytest

import userservice
from userservice import create_app
from userservice.config import ConfigError


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_health_is_ok_as_plain_text(client, method):
    response = client.open("/.well-known/health", method=method)
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.data == (b"ok" if method == "GET" else b"")


def test_health_stream_path_without_an_upgrade_is_ok_once(client):
    response = client.get("/.well-known/stream/health")
    assert (response.status_code, response.mimetype, response.data) == (200, "text/plain", b"ok")


def test_version_is_a_pieces_os_version_the_published_clients_accept(client):
    response = client.get("/.well-known/version")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    # pieces-cli 1.20.1 (Settings.PIECES_OS_MIN_VERSION / _MAX_VERSION) accepts [12.0.0, 13.0.0)
    major, minor, patch = map(int, response.get_data(as_text=True).split("."))
    assert (12, 0, 0) <= (major, minor, patch) < (13, 0, 0)


def test_version_is_configurable(app_config, request):
    app_config["PIECES_OS_VERSION"] = "12.3.4-beta.1"
    client = request.getfixturevalue("app").test_client()
    assert client.get("/.well-known/version").get_data(as_text=True) == "12.3.4-beta.1"


@pytest.mark.parametrize("path, status", [("/.well-known/version", 200), ("/user", 200), ("/nothing", 404)])
def test_every_answer_names_the_service_version(client, path, status):
    response = client.get(path)
    assert response.status_code == status
    assert response.headers["X-Userservice-Version"] == userservice.__version__


@pytest.mark.parametrize("value", ["0.1", "twelve", "12", "12.0.0 ", "v12.0.0", ""])
def test_unusable_pieces_os_version_stops_the_app(sqlite_url, value):
    with pytest.raises(ConfigError, match="^PIECES_OS_VERSION="):
        create_app({"DATABASE_URL": sqlite_url, "PIECES_OS_VERSION": value})


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
