"""The /users blueprint through HTTP, on both backends (token sign-in is in test_tokens.py)."""
import pytest


def select(client, user_id, **fields):
    response = client.post("/user/select", json={"user_id": user_id, **fields})
    assert response.status_code == 200
    return response.get_json()


def assert_problem(response, status):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["status"] == status


def test_snapshot_empty_device_has_an_empty_iterable(client):
    response = client.get("/users")
    assert response.status_code == 200
    assert response.get_json() == {"iterable": []}


def test_snapshot_lists_users_in_order_of_first_sign_in(client):
    names = ["auth0|c", "auth0|a", "auth0|b"]
    for name in names:
        select(client, name)
    select(client, "auth0|c", nickname="again")  # signing in again keeps the first position
    listed = client.get("/users").get_json()["iterable"]
    assert [user["id"] for user in listed] == [select(client, name)["id"] for name in names]


def test_specific_user_returns_the_stored_profile(client):
    profile = select(client, "auth0|1", email="x@y.z")
    select(client, "auth0|2")
    response = client.get("/users/%s" % profile["id"])
    assert response.status_code == 200
    assert response.get_json() == profile


@pytest.mark.parametrize("path", ["/users/unknown", "/users/unknown/disconnect", "/users/unknown/select"])
def test_unknown_user_is_404(client, path):
    profile = select(client, "auth0|1")
    response = client.get(path) if path == "/users/unknown" else client.post(path)
    assert_problem(response, 404)
    assert client.get("/users").get_json() == {"iterable": [profile]}
    assert client.get("/user").get_json() == {"user": profile}


def test_select_known_user_makes_its_stored_profile_current(client):
    first = select(client, "auth0|1", email="x@y.z")
    second = select(client, "auth0|2")
    response = client.post("/users/%s/select" % first["id"])
    assert response.status_code == 200
    assert response.get_json() == first  # as stored: not even `updated` moves
    assert client.get("/user").get_json() == {"user": first}
    assert client.get("/users").get_json() == {"iterable": [first, second]}


@pytest.mark.parametrize("path", ["/users/%00", "/users/a%00b", "/users/%00/disconnect"])
def test_user_id_with_nul_is_404(client, path):
    """PostgreSQL refuses to compare text with NUL: without the route's converter, a 500."""
    select(client, "auth0|1")
    method = client.post if path.endswith("disconnect") else client.get
    assert_problem(method(path), 404)
    assert len(client.get("/users").get_json()["iterable"]) == 1


def test_user_id_longer_than_255_is_404(client):
    assert_problem(client.get("/users/" + "x" * 256), 404)


def test_disconnect_removes_the_user_and_returns_the_rest(client):
    first = select(client, "auth0|1")
    second = select(client, "auth0|2")
    response = client.post("/users/%s/disconnect" % first["id"])
    assert response.status_code == 200
    assert response.get_json() == {"iterable": [second]}
    assert_problem(client.get("/users/%s" % first["id"]), 404)
    assert client.get("/user").get_json() == {"user": second}


def test_disconnect_of_the_current_user_leaves_nobody_current(client):
    profile = select(client, "auth0|1")
    assert client.post("/users/%s/disconnect" % profile["id"]).get_json() == {"iterable": []}
    assert client.get("/user").get_json() == {}
    assert client.get("/user/refresh").status_code == 511


def test_disconnect_removes_the_beta_status(client):
    profile = select(client, "auth0|1")
    vision = {"from": {"value": "2024-01-01T00:00:00+00:00"}, "continuous": True}
    client.post("/user/beta/status", json={"user": profile["id"], "auth0": {"vision": vision}})
    client.post("/users/%s/disconnect" % profile["id"])
    assert "beta" not in select(client, "auth0|1").get("auth0", {})


def test_disconnect_frees_username_for_others(client):
    first = select(client, "auth0|1", nickname="mark")
    client.post("/users/%s/disconnect" % first["id"])
    assert select(client, "auth0|2", nickname="mark")["username"] == "mark"
