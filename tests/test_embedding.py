"""An existing Flask site mounts the service under a prefix, as README.md shows."""
import re

import pytest

from conftest import discard
from embedded_site import create_site

API_KEY = "embedded-key-c41d"


@pytest.fixture
def site_settings(database_url):
    return {"TESTING": True, "DATABASE_URL": database_url}


@pytest.fixture
def site(site_settings):
    """A site of its own, with its own route, that embeds the service under /pieces."""
    app = create_site(site_settings)
    yield app.test_client()
    discard(app)


def test_embedded_endpoints_answer_under_the_prefix(site):
    profile = site.post("/pieces/user/select", json={"user_id": "auth0|embedded", "nickname": "em"}).get_json()
    assert profile["username"] == "em"
    assert site.get("/pieces/user").get_json() == {"user": profile}
    assert site.get("/pieces/users").get_json() == {"iterable": [profile]}
    assert site.get("/pieces/users/%s" % profile["id"]).get_json() == profile
    assert site.post("/pieces/user/clear").status_code == 204
    assert site.get("/pieces/.well-known/health").data == b"ok"


def test_embedded_service_leaves_the_site_routes_alone(site):
    assert site.get("/").data == b"my site"


def test_embedded_endpoints_are_not_mounted_at_the_root(site):
    assert site.get("/user").status_code == 404
    assert site.get("/.well-known/health").status_code == 404


def test_embedded_errors_are_problem_json(site):
    response = site.get("/pieces/users/ghost")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["instance"] == "/pieces/users/ghost"


def test_embedded_pages_and_their_assets_live_under_the_prefix(site):
    html = site.get("/pieces/").get_data(as_text=True)
    assert 'data-root="/pieces"' in html
    links = [link for link in re.findall(r'(?:src|href)="([^"]*)"', html) if not link.startswith("data:")]
    assert links and all(link.startswith("/pieces/") for link in links)
    for link in links:
        assert site.get(link).status_code == 200, link
    assert site.get("/pieces/docs").status_code == 200


def test_embedded_health_and_pages_open_without_the_api_key(site_settings, request):
    site_settings["API_KEY"] = API_KEY
    site = request.getfixturevalue("site")
    assert site.get("/pieces/.well-known/health").data == b"ok"
    assert site.get("/pieces/").status_code == 200
    assert site.get("/pieces/user").status_code == 401
