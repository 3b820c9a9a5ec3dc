"""GET /openapi.json: a valid OpenAPI 3.1 document naming every route, status and wire name."""
import re

import pytest
from openapi_spec_validator import validate

import userservice
from userservice import openapi

API_KEY = "openapi-key-31c8"
METHODS = {"get", "post", "head"}


@pytest.fixture(params=[False, True], ids=["open", "keyed"])
def served(request, app_config):
    if request.param:
        app_config["API_KEY"] = API_KEY
    client = request.getfixturevalue("app").test_client()
    response = client.get("/openapi.json", headers={"X-API-Key": API_KEY})
    assert response.status_code == 200 and response.mimetype == "application/json"
    return request.param, client.application, response.get_json()


def test_document_is_valid_openapi(served):
    _keyed, _app, document = served
    validate(document)
    assert document["openapi"].startswith("3.1")


def test_document_is_the_generated_one(served):
    keyed, _app, document = served
    assert document == {**openapi.build(keyed), "servers": [{"url": "/"}]}


def openapi_path(rule):
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule)


def test_every_route_is_documented_with_its_methods(served):
    """Every route of the API; the pages (HTML for people, pages.py) are not operations."""
    _keyed, app, document = served
    routes = {(openapi_path(rule.rule), method.lower()) for rule in app.url_map.iter_rules()
              if not rule.endpoint.startswith("pages.") for method in rule.methods if method.lower() in METHODS}
    documented = {(path, method) for path, item in document["paths"].items() for method in item if method in METHODS}
    assert routes - {(path, "head") for path, method in routes if path != "/.well-known/health"} == documented


@pytest.mark.parametrize("path, method, statuses", [
    ("/user", "get", {"200", "400", "403"}),
    ("/user/select", "post", {"200", "400", "403", "408", "409", "413", "415"}),
    ("/user/clear", "post", {"204", "400", "403"}),
    ("/user/refresh", "get", {"200", "400", "403", "511"}),
    ("/user/update", "post", {"200", "400", "403", "404", "408", "409", "413", "415"}),
    ("/user/beta/status", "post", {"200", "400", "403", "408", "413", "415", "511"}),
    ("/user/update/vanity", "post", {"200", "400", "403", "404", "408", "409", "413", "415", "511"}),
    ("/users/authenticate/from_token", "post", {"200", "400", "403", "408", "409", "413", "415", "501", "503"}),
    ("/users/{user}", "get", {"200", "400", "403", "404"}),
    ("/users/{user}/disconnect", "post", {"200", "400", "403", "404"}),
    ("/users/{user}/select", "post", {"200", "400", "403", "404"}),
    ("/user/stream", "get", {"101", "200", "400", "403", "426", "503"}),
    ("/os/sign_in", "post", {"200", "400", "403", "511"}),
    ("/os/sign_out", "post", {"200", "400", "403"}),
    ("/allocations/connect", "post", {"200", "400", "403", "408", "413", "415", "511"}),
    ("/.well-known/stream/health", "get", {"101", "200", "400", "403", "503"}),
])
def test_documented_statuses(served, path, method, statuses):
    keyed, _app, document = served
    expected = statuses | ({"401"} if keyed else set())
    assert set(document["paths"][path][method]["responses"]) == expected


def test_health_needs_no_key(served):
    _keyed, _app, document = served
    health = document["paths"]["/.well-known/health"]["get"]
    assert health["security"] == [] and "401" not in health["responses"]


def test_stream_is_described_as_websocket_and_event_stream(served):
    _keyed, _app, document = served
    stream = document["paths"]["/user/stream"]["get"]
    assert "WebSocket" in stream["description"]
    assert "text/event-stream" in stream["responses"]["200"]["content"]
    assert stream["responses"]["101"]["x-websocket-frame"]["anyOf"][0]["$ref"].endswith("/UserProfile")


@pytest.mark.parametrize("component, wire_name, python_name", [
    ("UserProfile", "schema", "model_schema"),
    ("ExternalProvider", "profileData", "profile_data"),
    ("ExternalProvider", "isSocial", "is_social"),
    ("Auth0UserMetadata", "open_AI", "open_ai"),
    ("AnonymousTemporalRange", "from", "from_"),
])
def test_wire_names_are_documented(served, component, wire_name, python_name):
    _keyed, _app, document = served
    properties = document["components"]["schemas"][component]["properties"]
    assert wire_name in properties and python_name not in properties


def test_health_stream_is_described_as_a_websocket_of_ok(served):
    keyed, _app, document = served
    stream = document["paths"]["/.well-known/stream/health"]["get"]
    assert stream["responses"]["101"]["x-websocket-frame"] == {"const": "ok"}
    assert ("security" in stream) == keyed


def test_allocations_connect_body_is_optional(served):
    _keyed, _app, document = served
    assert document["paths"]["/allocations/connect"]["post"]["requestBody"]["required"] is False
    assert document["paths"]["/user/update"]["post"]["requestBody"]["required"] is True


def test_info_version_is_the_service_version(served):
    _keyed, _app, document = served
    assert document["info"]["version"] == userservice.__version__
    assert "PiecesOS" in document["paths"]["/.well-known/version"]["get"]["summary"]


def test_security_schemes_only_when_a_key_is_set(served):
    keyed, _app, document = served
    assert ("securitySchemes" in document.get("components", {})) == keyed
    assert ("security" in document) == keyed
