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
