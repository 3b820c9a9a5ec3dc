"""An existing Flask site mounts the service under a prefix, as README.md shows."""
import pytest
from flask import Flask

import userservice
from conftest import discard


@pytest.fixture
def site(database_url):
    """A site of its own, with its own route, that embeds the service under /pieces."""
    app = Flask("mysite")
    app.config["TESTING"] = True

    @app.get("/")
    def home():
        return "my site"

    userservice.configure(app, {"DATABASE_URL": database_url})
    userservice.init_app(app, url_prefix="/pieces")
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
