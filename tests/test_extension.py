"""extension.py: everything an app owns is its own. Two apps in one process, each on a
database of its own (two SQLite files, or two PostgreSQL schemas), share no users, no
change log, no stream and no cached reads."""
import json

import pytest

from userservice import create_app
from conftest import EventReader, discard, parts


@pytest.fixture
def two_apps(database_url, second_database_url):
    apps = [create_app({"TESTING": True, "DATABASE_URL": url, "STREAM_HEARTBEAT_INTERVAL": 0.1})
            for url in (database_url, second_database_url)]
    yield apps
    for app in apps:
        discard(app)


def select(client, user_id):
    response = client.post("/user/select", json={"user_id": user_id, "nickname": user_id[6:]})
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def test_two_apps_each_see_only_their_own_users(two_apps):
    first, second = (app.test_client() for app in two_apps)
    mark = select(first, "auth0|mark")
    assert second.get("/user").get_json() == {}  # read before the other app's next write, too
    assert second.get("/users").get_json() == {"iterable": []}
    assert second.get("/users/%s" % mark["id"]).status_code == 404
    ada = select(second, "auth0|ada")
    assert first.get("/user").get_json() == {"user": mark}
    assert second.get("/user").get_json() == {"user": ada}
    assert first.get("/users").get_json() == {"iterable": [mark]}
    assert second.get("/users").get_json() == {"iterable": [ada]}
    assert first.post("/users/%s/disconnect" % ada["id"]).status_code == 404


def test_two_apps_each_log_and_stream_only_their_own_changes(two_apps):
    first, second = (app.test_client() for app in two_apps)
    streams = [EventReader(client.get("/user/stream", buffered=False)) for client in (first, second)]
    try:
        assert [stream.next_event() for stream in streams] == [(0, "null"), (0, "null")]
        select(first, "auth0|mark")
        select(first, "auth0|bob")  # (signing mark in again would change nothing: no change)
        ada = select(second, "auth0|ada")
        assert [streams[0].next_event()[0], streams[0].next_event()[0]] == [1, 2]
        seq, state = streams[1].next_event()
        assert (seq, json.loads(state)) == (1, ada)
        assert [parts(app).change_log.last_seq() for app in two_apps] == [2, 1]
    finally:
        for stream in streams:
            stream.close()


def test_two_apps_own_every_part(two_apps):
    first, second = (parts(app) for app in two_apps)
    for name in ("storage", "change_log", "hub", "follower", "commits", "read_cache", "profiles", "body_watchdog"):
        assert getattr(first, name) is not getattr(second, name), name
    assert first.storage.database is not second.storage.database
    assert first.storage.models.User is not second.storage.models.User
    assert first.storage.models.User._meta.database is first.storage.database
