"""An existing Flask site mounts the service under a prefix, as README.md shows: through
Flask's test client, and served by gunicorn to Debian's Chromium (see browser.py)."""
import os
import re
import sys

import pytest
import requests
from playwright.sync_api import expect

import userservice
from browser import WAIT_MS, card, current_user, expect_live, sign_in
from conftest import RunningServer, discard
from embedded_site import PREFIX, create_site

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
    response = site.get("/")
    assert response.data == b"my site"
    assert "X-Userservice-Version" not in response.headers
    assert site.get("/pieces/user").headers["X-Userservice-Version"] == userservice.__version__


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


class EmbeddedSite(RunningServer):
    """tests/embedded_site.py under gunicorn: the service mounted at /pieces of another site."""

    health_path = PREFIX + "/.well-known/health"

    def command(self, args):
        return [sys.executable, "-m", "gunicorn", "--chdir", os.path.dirname(__file__), "--bind",
                "127.0.0.1:%d" % self.port, "--workers", str(self.workers), "--worker-class", "gthread",
                "--threads", "8", "--graceful-timeout", "2", "embedded_site:create_site()"]

    def booted(self):
        return self.output().count("Booting worker") >= self.workers


@pytest.fixture
def embedded_site(database_url):
    site = EmbeddedSite(database_url, extra_env={"USERSERVICE_STREAM_HEARTBEAT_INTERVAL": "1"})
    yield site
    site.stop()


def test_page_works_under_the_url_prefix_of_an_embedding_site(embedded_site, open_page):
    service = embedded_site.url + PREFIX
    page = open_page()
    paths = []
    page.on("request", lambda request: paths.append(request.url[len(embedded_site.url):]))
    page.goto(service + "/")
    expect_live(page)
    sign_in(service, "auth0|ada", name="Ada Lovelace")
    expect(card(page).locator(".name")).to_have_text("Ada Lovelace", timeout=WAIT_MS)
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#nobody")).to_be_visible(timeout=WAIT_MS)
    assert current_user(service) is None
    assert paths and all(path.startswith(PREFIX + "/") for path in paths)
    assert requests.get(embedded_site.url + "/", timeout=10).text == "my site"
