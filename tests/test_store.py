"""The store's use cases and the models they write, without HTTP, on both backends."""
import datetime
import json

import pytest

from flask import current_app

from userservice import schemas, store
from userservice.mapping import profile_id_for
from userservice.problems import Problem
from userservice.profiles import unique_key
from conftest import parts

AESTHETICS = {"theme": {"dark": True}, "font": {"size": 11}}
VISION = {"from_": {"value": datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)}, "continuous": True}


@pytest.fixture
def ctx(app):
    with app.app_context():
        yield


def select(user_id="auth0|1", **fields):
    return json.loads(store.select_user(schemas.auth0_user.load({"user_id": user_id, **fields})))


def update(profile):
    return json.loads(store.update_user(schemas.user_profile.load(profile)))


def storage():
    return parts(current_app).storage


def changes():
    Change = storage().models.Change
    with storage().connection():
        return list(Change.select(Change.seq, Change.kind, Change.user, Change.state).order_by(Change.seq).tuples())


def state():
    State = storage().models.State
    with storage().connection():
        return State.get(State.id == 1)


def user_row(user_id):
    User = storage().models.User
    with storage().connection():
        return User.get_or_none(User.id == user_id)


def test_migrated_database_starts_empty_with_nobody_current(ctx):
    assert (state().seq, state().current) == (0, None)
    assert changes() == []
    assert store.current_profile() == "null"


def test_select_stores_the_document_and_lookup_columns(ctx):
    profile = select(nickname="Mark", email="m@x.io", created_at="2020-01-01T01:00:00+01:00")
    row = user_row(profile["id"])
    assert json.loads(row.document) == profile
    assert (row.subject, row.email, row.username) == ("auth0|1", "m@x.io", "Mark")
    assert row.username_key == unique_key("mark") == unique_key("MARK")
    assert row.created == datetime.datetime(2020, 1, 1, 0, 0)  # naive UTC on both backends
    assert row.signed_in is not None


def test_select_makes_the_user_current_and_logs_its_state(ctx):
    profile = select()
    assert state().current == profile["id"]
    assert changes() == [(1, "select", profile["id"], json.dumps(profile, separators=(",", ":")))]
    assert store.current_profile() == user_row(profile["id"]).document


def test_each_write_advances_seq_by_one(ctx):
    profile = select()
    update({**profile, "aesthetics": AESTHETICS})
    store.clear_user()
    assert [seq for seq, *_ in changes()] == [1, 2, 3]
    assert state().seq == 3


def test_select_known_user_logs_its_stored_state_and_changes_no_profile(ctx):
    first = select("auth0|1")
    select("auth0|2")
    stored = user_row(first["id"])
    assert json.loads(store.select_known_user(first["id"])) == first
    assert state().current == first["id"]
    assert changes()[-1][1:] == ("select", first["id"], stored.document)
    assert (user_row(first["id"]).document, user_row(first["id"]).updated) == (stored.document, stored.updated)


def test_select_known_user_unknown_raises_404_and_writes_nothing(ctx):
    profile = select()
    before = changes()
    with pytest.raises(Problem) as error:
        store.select_known_user("ghost")
    assert error.value.code == 404
    assert changes() == before and state().current == profile["id"]


def test_clear_logs_null_and_keeps_the_user(ctx):
    profile = select()
    store.clear_user()
    assert state().current is None
    assert changes()[-1][1:] == ("clear", profile["id"], "null")
    assert user_row(profile["id"]) is not None


def test_clear_when_nobody_is_current_writes_nothing(ctx):
    store.clear_user()
    assert changes() == [] and state().seq == 0


def test_update_of_a_user_who_is_not_current_is_logged_but_not_streamed(ctx):
    first = select("auth0|1")
    select("auth0|2")
    update({**first, "aesthetics": AESTHETICS})
    assert changes()[-1][1:] == ("update", first["id"], None)


def test_update_unknown_user_raises_404_and_writes_nothing(ctx):
    with pytest.raises(Problem) as error:
        update({"id": "ghost", "aesthetics": AESTHETICS})
    assert error.value.code == 404
    assert changes() == [] and user_row("ghost") is None


def test_update_taken_username_raises_409_and_writes_nothing(ctx):
    select("auth0|1", nickname="mark")
    second = select("auth0|2")
    before = changes()
    with pytest.raises(Problem) as error:
        update({**second, "username": "MARK"})
    assert error.value.code == 409
    assert changes() == before
    assert user_row(second["id"]).username is None


def test_refresh_nobody_current_raises_511(ctx):
    with pytest.raises(Problem) as error:
        store.refresh_user()
    assert error.value.code == 511


def test_refresh_reannounces_the_stored_profile(ctx):
    profile = select()
    assert json.loads(store.refresh_user()) == profile
    assert changes()[-1][1] == "refresh"


def test_beta_status_is_stored_in_the_profile(ctx):
    profile = select()
    store.set_beta_status({"user": profile["id"], "auth0": {"vision": VISION}})
    stored = {"from": {"value": "2024-01-01T00:00:00+00:00"}, "continuous": True}
    assert json.loads(user_row(profile["id"]).document)["auth0"]["beta"] == stored
    store.set_beta_status({"user": profile["id"]})
    assert "beta" not in json.loads(user_row(profile["id"]).document)["auth0"]


def test_disconnect_removes_user_and_clears_current(ctx):
    profile = select()
    store.set_beta_status({"user": profile["id"], "auth0": {"vision": VISION}})
    assert json.loads(store.disconnect_user(profile["id"])) == {"iterable": []}
    assert user_row(profile["id"]) is None and state().current is None
    assert changes()[-1][1:] == ("disconnect", profile["id"], "null")


def test_disconnect_unknown_user_raises_404(ctx):
    with pytest.raises(Problem) as error:
        store.disconnect_user("ghost")
    assert error.value.code == 404


def test_authenticate_from_claims_does_not_touch_the_current_user(ctx):
    current = select("auth0|current")
    created = json.loads(store.authenticate_from_claims({"sub": "auth0|other", "email": "o@x.io"}))
    assert created["id"] == profile_id_for("auth0|other")
    assert state().current == current["id"]
    assert changes()[-1][1:] == ("token", created["id"], None)
    assert user_row(created["id"]).subject == "auth0|other"


def test_authenticate_from_claims_finds_a_selected_user_by_subject(ctx):
    selected = select("auth0|1", user_metadata={"global_id": "global-1"})
    refreshed = json.loads(store.authenticate_from_claims({"sub": "auth0|1", "name": "New"}))
    assert refreshed["id"] == selected["id"] == "global-1"
    assert refreshed["name"] == "New"


def test_list_users_is_a_users_document_in_sign_in_order(ctx):
    ids = [select(name)["id"] for name in ("auth0|b", "auth0|a")]
    assert [user["id"] for user in json.loads(store.list_users())["iterable"]] == ids


# --- a write that changes nothing records nothing (issue 11) --------------------------------

ALLOCATION = {"id": "a", "user": "u", "project": "p", "status": {"cloud": "RUNNING"},
              "urls": {"base": {"status": "RUNNING", "url": "https://b"}, "id": {"status": "RUNNING", "url": "https://i"}}}


def beta_without_vision(profile):
    store.set_beta_status(schemas.user_beta_status.load({"user": profile["id"], "auth0": {"unknown": 1}, "x": 2}))


def beta_again(profile):
    store.set_beta_status({"user": profile["id"], "auth0": {"vision": VISION}})
    before = changes()
    store.set_beta_status({"user": profile["id"], "auth0": {"vision": VISION}})
    return before


def update_with_the_stored_profile(profile):
    update(json.loads(user_row(profile["id"]).document))


def vanity_again(profile):
    update({**profile, "allocation": ALLOCATION})
    store.update_vanity(schemas.vanity_request.load({"id": profile["id"], "vanityname": "mine"}))
    before = changes()
    store.update_vanity(schemas.vanity_request.load({"id": profile["id"], "vanityname": "MINE"}))
    return before


def select_the_current_user_again(profile):
    select(nickname="mark", updated_at="2024-01-01T00:00:00Z")


def token_with_what_is_stored(profile):
    store.authenticate_from_claims({"sub": "auth0|1", "email": "m@x.io", "nickname": "mark"})


NO_OPS = [beta_without_vision, beta_again, update_with_the_stored_profile, vanity_again,
          select_the_current_user_again, token_with_what_is_stored]


@pytest.mark.parametrize("write", NO_OPS, ids=lambda write: write.__name__)
def test_write_that_changes_nothing_records_no_change(ctx, write):
    profile = select(nickname="mark", email="m@x.io", updated_at="2024-01-01T00:00:00Z")
    before, document = changes(), user_row(profile["id"]).document
    before = write(profile) or before
    assert changes() == before
    if write is not beta_again and write is not vanity_again:
        assert user_row(profile["id"]).document == document  # not even `updated` moved


def test_select_of_another_user_with_nothing_new_records_only_the_switch(ctx):
    first = select("auth0|1", updated_at="2024-01-01T00:00:00Z")
    select("auth0|2")
    document = user_row(first["id"]).document
    select("auth0|1")  # without updated_at: `updated` would be now, were anything else new
    assert changes()[-1][1:] == ("select", first["id"], document)
    assert user_row(first["id"]).document == document


def test_each_sign_in_is_marked_after_every_earlier_one(ctx):
    selected = select("auth0|1")
    token = json.loads(store.authenticate_from_claims({"sub": "auth0|2"}))
    assert user_row(token["id"]).signed_in_seq > user_row(selected["id"]).signed_in_seq
    before = changes()
    select("auth0|1")  # still current, and nothing new: no change is recorded
    assert changes() == before
    assert user_row(selected["id"]).signed_in_seq > user_row(token["id"]).signed_in_seq
    store.authenticate_from_claims({"sub": "auth0|2"})  # nothing new either
    assert changes() == before
    assert user_row(token["id"]).signed_in_seq > user_row(selected["id"]).signed_in_seq


def test_update_keeps_the_last_sign_in(ctx):
    profile = select()
    seq = user_row(profile["id"]).signed_in_seq
    update({**profile, "aesthetics": AESTHETICS})
    assert user_row(profile["id"]).signed_in_seq == seq


def test_sign_out_is_clear_answered_with_the_users_known_here(ctx):
    profile = select()
    assert json.loads(store.sign_out()) == json.loads(store.list_users()) == {"iterable": [profile]}
    assert state().current is None
    assert changes()[-1][1:] == ("clear", profile["id"], "null")


def test_sign_out_when_nobody_is_current_writes_nothing(ctx):
    assert json.loads(store.sign_out()) == {"iterable": []}
    assert changes() == [] and state().seq == 0


def test_sign_in_while_signed_in_answers_the_current_user_and_writes_nothing(ctx):
    select("auth0|1")
    current = select("auth0|2")
    before = changes()
    assert json.loads(store.sign_in()) == current
    assert changes() == before and state().current == current["id"]


@pytest.mark.parametrize("last", ["select", "token"])
def test_sign_in_signs_in_again_whoever_signed_in_last(ctx, last):
    first = select("auth0|1")
    second = select("auth0|2")
    if last == "token":
        first = json.loads(store.authenticate_from_claims({"sub": "auth0|1"}))
    store.sign_out()
    expected = first if last == "token" else second
    assert json.loads(store.sign_in()) == expected
    assert state().current == expected["id"]
    assert changes()[-1][1:] == ("sign_in", expected["id"], user_row(expected["id"]).document)


def test_sign_in_passes_over_users_disconnected_since(ctx):
    first = select("auth0|1")
    second = select("auth0|2")
    store.disconnect_user(second["id"])
    assert json.loads(store.sign_in()) == first


def test_sign_in_with_nobody_to_sign_in_raises_511_naming_how_to_sign_in_and_writes_nothing(ctx):
    with pytest.raises(Problem) as error:
        store.sign_in()
    assert error.value.code == 511
    assert "/user/select" in error.value.description and "/users/authenticate/from_token" in error.value.description
    assert changes() == [] and state().current is None
