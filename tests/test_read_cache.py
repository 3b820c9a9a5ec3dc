"""GET /user and GET /users/{user} are served from memory, yet never stale: a write
acknowledged by another process is seen by the very next read. On both backends."""
import json

import pytest

from userservice import schemas, store


@pytest.fixture
def ctx(app):
    with app.app_context():
        yield


def current_name():
    document = store.current_profile()
    return None if document == "null" else json.loads(document)["name"]


def test_read_cache_current_user_written_by_another_process_is_seen_at_once(ctx, other_process):
    assert current_name() is None and current_name() is None  # read, then served from memory
    other_process("auth0|elsewhere")
    assert current_name() == "auth0|elsewhere"
    other_process("auth0|again")
    assert current_name() == "auth0|again"


def test_read_cache_user_written_by_another_process_is_seen_at_once(ctx, other_process):
    profile = json.loads(store.select_user(schemas.auth0_user.load({"user_id": "auth0|x", "name": "here"})))
    assert json.loads(store.get_user(profile["id"]))["name"] == "here"
    other_process("auth0|x")  # the same Auth0 user, now named after its id
    assert json.loads(store.get_user(profile["id"]))["name"] == "auth0|x"


def test_read_cache_serves_repeated_reads_without_the_database(ctx, service, monkeypatch):
    """Between commits the same document is served; a commit here invalidates it."""
    store.select_user(schemas.auth0_user.load({"user_id": "auth0|m", "name": "first"}))
    first = store.current_profile()
    monkeypatch.setattr(service.storage.statements.current_document, "scalar",
                        lambda *args, **kwargs: pytest.fail("read the database"))
    assert store.current_profile() is first
    monkeypatch.undo()
    store.select_user(schemas.auth0_user.load({"user_id": "auth0|m", "name": "second"}))
    assert json.loads(store.current_profile())["name"] == "second"
