"""The /user blueprint through HTTP, on both backends: success and error paths."""
import datetime

import pytest

from conftest import dump_database

AESTHETICS = {"theme": {"dark": True}, "font": {"size": 18}}
ALLOCATION = {"id": "alloc-1", "user": "u", "project": "proj", "region": "us",
              "status": {"cloud": "RUNNING"},
              "urls": {"base": {"status": "RUNNING", "url": "https://base.pieces.cloud"},
                       "id": {"status": "RUNNING", "url": "https://alloc-1.pieces.cloud"}}}
GITHUB = {"provider": "github", "user_id": "gh-1", "connection": "github", "isSocial": True}


def select(client, user_id="auth0|1", **fields):
    response = client.post("/user/select", json={"user_id": user_id, **fields})
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def update(client, profile, status=200):
    response = client.post("/user/update", json=profile)
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()


def assert_problem(response, status, field=None):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == status and body["title"] and body["detail"]
    if field:
        assert field in [param["name"] for param in body["invalid-params"]]


def parse(value):
    return datetime.datetime.fromisoformat(value)


def test_snapshot_nobody_signed_in_has_no_user(client):
    response = client.get("/user")
    assert response.status_code == 200
    assert response.get_json() == {}


def test_snapshot_returns_the_selected_user(client):
    profile = select(client, nickname="mark")
    assert client.get("/user").get_json() == {"user": profile}


def test_select_maps_the_auth0_user(client):
    profile = select(client, nickname="mark", email="m@x.io", identities=[GITHUB],
                     user_metadata={"global_id": "g-1", "vanityname": "markv"})
    assert profile["id"] == "g-1"
    assert (profile["username"], profile["email"], profile["vanityname"]) == ("mark", "m@x.io", "markv")
    assert profile["auth0"] == {"global_id": "g-1", "vanityname": "markv"}
    assert profile["aesthetics"] == {"theme": {"dark": False}, "font": {"size": 14}}
    provider = profile["providers"]["iterable"][0]
    assert {k: provider[k] for k in ("type", "user_id", "connection", "isSocial")} == {
        "type": "github", "user_id": "gh-1", "connection": "github", "isSocial": True}


def test_select_same_auth0_user_gets_the_same_id(client):
    assert select(client)["id"] == select(client)["id"] != select(client, "auth0|2")["id"]


def test_select_existing_user_keeps_aesthetics_and_allocation(client):
    profile = select(client)
    update(client, {**profile, "aesthetics": AESTHETICS, "allocation": ALLOCATION})
    again = select(client, nickname="renamed")
    assert again["aesthetics"] == AESTHETICS
    assert again["allocation"] == ALLOCATION
    assert again["username"] == "renamed"


def test_select_switches_the_current_user(client):
    select(client, "auth0|1")
    second = select(client, "auth0|2")
    assert client.get("/user").get_json() == {"user": second}
    assert len(client.get("/users").get_json()["iterable"]) == 2


@pytest.mark.parametrize("body", [None, {}, {"nickname": "x"}, {"user_metadata": {"global_id": ""}}])
def test_select_without_identity_is_400(client, body):
    response = client.post("/user/select", json=body) if body is not None else client.post("/user/select")
    assert_problem(response, 400)
    assert client.get("/users").get_json() == {"iterable": []}


def test_clear_leaves_nobody_current_and_keeps_the_user(client):
    profile = select(client)
    response = client.post("/user/clear")
    assert response.status_code == 204 and response.data == b""
    assert client.get("/user").get_json() == {}
    assert client.get("/users").get_json() == {"iterable": [profile]}


def test_clear_when_nobody_is_signed_in_is_204(client):
    assert client.post("/user/clear").status_code == 204


def test_refresh_returns_the_stored_profile(client):
    profile = select(client)
    response = client.get("/user/refresh")
    assert response.status_code == 200
    assert response.get_json() == profile


def test_refresh_nobody_signed_in_is_511(client):
    assert_problem(client.get("/user/refresh"), 511)


# Every GET route but the stream (test_stream.py), with a user that exists; ID is its id.
GET_PATHS = ["/user", "/user/refresh", "/user/providers", "/users", "/users/ID", "/users/nobody",
             "/.well-known/health", "/.well-known/ready", "/.well-known/version",
             "/.well-known/stream/health", "/openapi.json", "/metrics", "/", "/docs",
             "/static/userservice/page.css", "/static/swagger-ui/swagger-ui.css"]
# the path of GET_PATHS that stands for each route with a variable part
CONCRETE = {"<user_id:user>": "ID", "/static/userservice/<path:filename>": "/static/userservice/page.css",
            "/static/swagger-ui/<path:filename>": "/static/swagger-ui/swagger-ui.css"}


def test_get_paths_name_every_get_route(app):
    routes = set()
    for rule in app.url_map.iter_rules():
        if "GET" in rule.methods and rule.endpoint != "static":
            path = rule.rule
            for variable, concrete in CONCRETE.items():
                path = path.replace(variable, concrete)
            routes.add(path)
    assert routes - {"/user/stream"} == set(GET_PATHS) - {"/users/nobody"}


@pytest.mark.parametrize("signed_in", [True, False], ids=["signed in", "signed out"])
@pytest.mark.parametrize("path", GET_PATHS)
def test_head_of_every_get_route_has_its_headers_no_body_and_changes_nothing(app, client, path, signed_in):
    path = path.replace("ID", select(client)["id"])
    if not signed_in:
        client.post("/user/clear")
    before = dump_database(app)
    head = client.head(path)
    assert dump_database(app) == before
    get = client.get(path)
    assert (head.status_code, head.data) == (get.status_code, b"")
    # /metrics counts the HEAD itself, so its length moves between the two requests
    for name in ("Content-Type",) if path == "/metrics" else ("Content-Type", "Content-Length"):
        assert head.headers.get(name) == get.headers.get(name)


def test_update_replaces_the_document_keeping_created_and_setting_updated(client):
    profile = select(client, created_at="2020-01-01T00:00:00Z", updated_at="2020-06-01T00:00:00Z")
    sent = {"id": profile["id"], "aesthetics": AESTHETICS, "email": "new@x.io",
            "created": {"value": "2024-01-01T00:00:00+00:00"}, "updated": {"value": "2000-01-01T00:00:00+00:00"}}
    before = datetime.datetime.now(datetime.timezone.utc)
    stored = update(client, sent)
    assert stored["created"] == profile["created"]
    assert parse(stored["updated"]["value"]) >= before
    assert {k: stored[k] for k in ("id", "aesthetics", "email")} == {k: sent[k] for k in ("id", "aesthetics", "email")}
    assert "username" not in stored  # replaced, not merged
    assert client.get("/users/%s" % profile["id"]).get_json() == stored
    assert client.get("/user").get_json() == {"user": stored}


def test_update_of_a_user_who_is_not_current_keeps_the_current_user(client):
    first = select(client, "auth0|1")
    second = select(client, "auth0|2")
    update(client, {**first, "aesthetics": AESTHETICS})
    assert client.get("/user").get_json() == {"user": second}


def test_update_unknown_id_is_404_and_creates_nothing(client):
    assert_problem(client.post("/user/update", json={"id": "nobody", "aesthetics": AESTHETICS}), 404)
    assert client.get("/users").get_json() == {"iterable": []}


@pytest.mark.parametrize("field", ["username", "vanityname"])
def test_update_taken_name_is_409_ignoring_case(client, field):
    first = select(client, "auth0|1")
    update(client, {**first, field: "Mark"})
    second = select(client, "auth0|2")
    assert_problem(client.post("/user/update", json={**second, field: "mARK"}), 409, field)
    assert field not in client.get("/users/%s" % second["id"]).get_json()


def test_update_own_name_in_another_case_is_allowed(client):
    profile = update(client, {**select(client), "username": "Mark"})
    assert update(client, {**profile, "username": "MARK"})["username"] == "MARK"


@pytest.mark.parametrize("missing", ["id", "aesthetics"])
def test_update_without_required_field_is_400(client, missing):
    profile = select(client)
    body = {key: value for key, value in profile.items() if key != missing}
    assert_problem(client.post("/user/update", json=body), 400, missing)


def beta_body(user, start="2024-01-01T00:00:00+00:00", end="2024-12-31T00:00:00+00:00"):
    return {"user": user, "auth0": {"vision": {"from": {"value": start}, "to": {"value": end}, "between": True}}}


def test_beta_status_is_stored_and_shows_in_the_profile(client):
    profile = select(client)
    body = beta_body(profile["id"])
    response = client.post("/user/beta/status", json=body)
    assert response.status_code == 200
    assert response.get_json() == body
    assert client.get("/user").get_json()["user"]["auth0"]["beta"] == body["auth0"]["vision"]


def test_beta_status_survives_update_and_select_that_omit_it(client):
    profile = select(client)
    body = beta_body(profile["id"])
    client.post("/user/beta/status", json=body)
    assert update(client, {"id": profile["id"], "aesthetics": AESTHETICS})["auth0"]["beta"] == body["auth0"]["vision"]
    assert select(client)["auth0"]["beta"] == body["auth0"]["vision"]


def test_beta_status_without_vision_removes_it(client):
    profile = select(client)
    client.post("/user/beta/status", json=beta_body(profile["id"]))
    response = client.post("/user/beta/status", json={"user": profile["id"]})
    assert response.get_json() == {"user": profile["id"], "auth0": {}}
    assert "beta" not in client.get("/user").get_json()["user"].get("auth0", {})


def test_beta_status_for_another_user_is_511(client):
    other = select(client, "auth0|1")
    select(client, "auth0|2")
    assert_problem(client.post("/user/beta/status", json=beta_body(other["id"])), 511)


def test_beta_status_nobody_signed_in_is_511(client):
    assert_problem(client.post("/user/beta/status", json=beta_body("anyone")), 511)


def test_beta_status_from_after_to_is_400(client):
    profile = select(client)
    body = beta_body(profile["id"], start="2025-01-01T00:00:00Z", end="2024-01-01T00:00:00Z")
    assert_problem(client.post("/user/beta/status", json=body), 400, "auth0.vision.from")


def test_providers_nobody_signed_in_has_no_user(client):
    response = client.get("/user/providers")
    assert response.status_code == 200 and response.get_json() == {}


def test_providers_returns_the_current_user_with_its_identities(client):
    profile = select(client, identities=[GITHUB])
    body = client.get("/user/providers").get_json()
    assert body == {"user": profile}
    assert body["user"]["providers"]["iterable"][0]["user_id"] == "gh-1"


def signed_in_with_allocation(client, user_id="auth0|1"):
    return update(client, {**select(client, user_id), "allocation": ALLOCATION})


def test_vanity_sets_the_name_and_the_vanity_url(client):
    profile = signed_in_with_allocation(client)
    response = client.post("/user/update/vanity", json={"id": profile["id"], "vanityname": "Mark-1"})
    assert response.status_code == 200
    stored = response.get_json()
    assert stored["vanityname"] == "mark-1"
    assert stored["allocation"]["urls"]["vanity"] == {"status": "RUNNING", "url": "https://mark-1.pieces.cloud"}
    assert client.get("/user").get_json() == {"user": stored}


def test_vanity_url_uses_the_configured_domain(app_config, request):
    app_config["CLOUD_DOMAIN"] = "example.org"
    client = request.getfixturevalue("client")
    profile = signed_in_with_allocation(client)
    stored = client.post("/user/update/vanity", json={"id": profile["id"], "vanityname": "mark"}).get_json()
    assert stored["allocation"]["urls"]["vanity"]["url"] == "https://mark.example.org"


def test_vanity_nobody_signed_in_is_511(client):
    assert_problem(client.post("/user/update/vanity", json={"id": "x", "vanityname": "mark"}), 511)


def test_vanity_for_another_user_is_511(client):
    other = signed_in_with_allocation(client, "auth0|1")
    select(client, "auth0|2")
    assert_problem(client.post("/user/update/vanity", json={"id": other["id"], "vanityname": "mark"}), 511)


def test_vanity_without_allocation_is_404(client):
    profile = select(client)
    assert_problem(client.post("/user/update/vanity", json={"id": profile["id"], "vanityname": "mark"}), 404)
    assert "vanityname" not in client.get("/user").get_json()["user"]


def test_vanity_taken_by_another_user_is_409(client):
    update(client, {**select(client, "auth0|1"), "vanityname": "MARK"})
    profile = signed_in_with_allocation(client, "auth0|2")
    assert_problem(client.post("/user/update/vanity", json={"id": profile["id"], "vanityname": "mark"}),
                   409, "vanityname")


@pytest.mark.parametrize("name", ["", "-mark", "mark-", "ma_rk", "m.ark", "märk", "a" * 64])
def test_vanity_invalid_dns_label_is_400(client, name):
    profile = signed_in_with_allocation(client)
    assert_problem(client.post("/user/update/vanity", json={"id": profile["id"], "vanityname": name}),
                   400, "vanityname")
    assert "vanityname" not in client.get("/user").get_json()["user"]


@pytest.mark.parametrize("name", ["a", "a" * 63, "0-9", "mark"])
def test_vanity_valid_dns_label_is_accepted(client, name):
    profile = signed_in_with_allocation(client)
    response = client.post("/user/update/vanity", json={"id": profile["id"], "vanityname": name})
    assert response.status_code == 200 and response.get_json()["vanityname"] == name


# --- sign-in rules (issue 11): the three reported scenarios, then the rules behind them -----


def vanity(client, profile, name, status=200):
    response = client.post("/user/update/vanity", json={"id": profile["id"], "vanityname": name})
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()


def test_select_nickname_another_user_holds_still_signs_in(client):
    first = select(client, "auth0|1", nickname="john")
    second = select(client, "auth0|2", nickname="John")
    assert "username" not in second
    assert client.get("/user").get_json() == {"user": second}
    assert client.get("/users/%s" % first["id"]).get_json()["username"] == "john"


def test_select_nickname_another_user_holds_keeps_the_stored_username(client):
    select(client, "auth0|1", nickname="john")
    second = update(client, {**select(client, "auth0|2"), "username": "johnny"})
    assert select(client, "auth0|2", nickname="john")["username"] == "johnny"
    assert_problem(client.post("/user/update", json={**second, "username": "JOHN"}), 409, "username")


def test_select_again_keeps_what_the_payload_does_not_carry(client):
    metadata = {"global_id": "g-1", "vanityname": "markv", "cloud_key": "ck"}
    first = select(client, "auth0|1", nickname="mark", email="m@x.io", name="Mark", picture="https://p",
                   identities=[GITHUB], user_metadata=metadata)
    update(client, {**first, "aesthetics": AESTHETICS, "allocation": ALLOCATION})
    vanity(client, first, "markv")
    assert client.post("/user/beta/status", json=beta_body(first["id"])).status_code == 200
    kept = client.get("/user").get_json()["user"]
    again = select(client, "auth0|1", user_metadata={"global_id": "g-1"})
    assert {key: value for key, value in again.items() if key != "updated"} == {
        key: value for key, value in kept.items() if key != "updated"}
    assert again["allocation"]["urls"]["vanity"]["url"] == "https://markv.pieces.cloud"


def test_select_again_updates_what_the_payload_carries_and_merges_providers(client):
    select(client, "auth0|1", nickname="mark", email="m@x.io", identities=[GITHUB])
    google = {"provider": "google-oauth2", "user_id": "g-7"}
    again = select(client, "auth0|1", email="new@x.io", nickname="marko", identities=[google])
    assert (again["email"], again["username"]) == ("new@x.io", "marko")
    assert [(p["type"], p["user_id"]) for p in again["providers"]["iterable"]] == [
        ("google-oauth2", "g-7"), ("github", "gh-1")]


def test_select_without_global_id_finds_the_user_signed_in_with_that_user_id(client):
    first = select(client, "auth0|1", user_metadata={"global_id": "g-1"}, email="m@x.io")
    again = select(client, "auth0|1", name="Mark")
    assert again["id"] == first["id"] == "g-1"
    assert (again["email"], again["name"]) == ("m@x.io", "Mark")
    assert len(client.get("/users").get_json()["iterable"]) == 1


def test_vanity_name_stays_unique_after_re_sign_in(client):
    first = signed_in_with_allocation(client, "auth0|1")
    vanity(client, first, "shared")
    select(client, "auth0|1")  # signs in again without the vanity name
    second = signed_in_with_allocation(client, "auth0|2")
    assert_problem(client.post("/user/update/vanity", json={"id": second["id"], "vanityname": "shared"}),
                   409, "vanityname")
    assert_problem(client.post("/user/update", json={**second, "vanityname": "Shared"}), 409, "vanityname")
    claimed = select(client, "auth0|2", user_metadata={"global_id": second["id"], "vanityname": "shared"})
    assert "vanityname" not in claimed and "vanity" not in claimed["allocation"]["urls"]
    holder = client.get("/users/%s" % first["id"]).get_json()
    assert holder["vanityname"] == "shared"
    assert holder["allocation"]["urls"]["vanity"]["url"] == "https://shared.pieces.cloud"


def test_select_with_a_new_vanity_name_moves_the_vanity_url(client):
    profile = signed_in_with_allocation(client, "auth0|1")
    vanity(client, profile, "old")
    again = select(client, "auth0|1", user_metadata={"global_id": profile["id"], "vanityname": "New"})
    assert again["vanityname"] == "new"
    assert again["allocation"]["urls"]["vanity"] == {"status": "RUNNING", "url": "https://new.pieces.cloud"}


@pytest.mark.parametrize("sent, expected", [
    ({"vanityname": "Other"}, ("other", "https://other.pieces.cloud")),
    ({"allocation": {**ALLOCATION, "urls": {**ALLOCATION["urls"], "vanity": {
        "status": "PENDING", "url": "https://elsewhere.example"}}}}, ("mine", "https://mine.pieces.cloud")),
    ({"vanityname": None}, (None, None)),
])
def test_update_vanity_url_always_follows_the_vanity_name(client, sent, expected):
    profile = signed_in_with_allocation(client)
    stored = update(client, {**vanity(client, profile, "mine"), **sent})
    url = stored["allocation"]["urls"].get("vanity", {}).get("url")
    assert (stored.get("vanityname"), url) == expected


# --- values of any length the schemas accept are stored on both backends, never a 5xx -------

LONG = 16 * 1024  # the longest string a schema accepts (wire.MAX_STRING)


def test_select_long_email_name_and_nickname_are_stored(client):
    long = {"email": "e" * (LONG - 6) + "@x.io", "name": "n" * LONG, "nickname": "k" * LONG}
    profile = select(client, "auth0|1", **long)
    assert (profile["email"], profile["name"], profile["username"]) == (long["email"], long["name"], long["nickname"])
    assert client.get("/users/%s" % profile["id"]).get_json() == profile
    other = select(client, "auth0|2", nickname="K" * LONG)
    assert "username" not in other  # the long name is held, case-insensitively


@pytest.mark.parametrize("field", ["username", "vanityname", "email"])
def test_update_long_values_are_stored_and_stay_unique(client, field):
    value = "v" * LONG
    first = update(client, {**select(client, "auth0|1"), field: value})
    assert first[field] == value
    response = client.post("/user/update", json={**select(client, "auth0|2"), field: value.upper()})
    if field == "email":
        assert response.status_code == 200  # emails need not be unique
    else:
        assert_problem(response, 409, field)


@pytest.mark.parametrize("body, field", [
    ({"user_id": "u" * 256}, "user_id"),
    ({"user_id": "auth0|1", "user_metadata": {"global_id": "g" * 256}}, "user_metadata.global_id"),
])
def test_select_id_longer_than_255_is_400_naming_it(client, body, field):
    assert_problem(client.post("/user/select", json=body), 400, field)
    assert client.get("/users").get_json() == {"iterable": []}


@pytest.mark.parametrize("body", [{"user_id": "u" * 255}, {"user_metadata": {"global_id": "g" * 255}}])
def test_select_id_of_255_is_accepted(client, body):
    profile = select(client, **body) if "user_id" in body else client.post("/user/select", json=body).get_json()
    assert client.get("/users/%s" % profile["id"]).get_json() == profile
