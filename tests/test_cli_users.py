"""`userservice users ...` and `userservice doctor`, as real processes on both backends:
export -> import round-trips every field, an import is all or nothing naming each bad line,
and a change made with the CLI reaches a running server's subscribers."""
import json
import os
import subprocess
import sys

import pytest
import websocket

from conftest import dump_database

BIN = os.path.dirname(sys.executable)
ALLOCATION = {"id": "alloc-1", "user": "u", "project": "proj", "region": "us", "status": {"cloud": "RUNNING"},
              "urls": {"base": {"status": "RUNNING", "url": "https://base.pieces.cloud"},
                       "id": {"status": "RUNNING", "url": "https://alloc-1.pieces.cloud"}}}
VISION = {"from": {"value": "2024-01-01T00:00:00+00:00"}, "continuous": True}


def cli(database_url, *args, check=True, stdin=None):
    process = subprocess.run([os.path.join(BIN, "userservice"), *args], input=stdin, capture_output=True, text=True,
                             env={**os.environ, "USERSERVICE_DATABASE_URL": database_url}, timeout=60)
    if check:
        assert process.returncode == 0, process.stdout + process.stderr
    return process


def ok(response):
    assert response.status_code in (200, 204), response.get_data(as_text=True)
    return response.get_json()


@pytest.fixture
def device(client):
    """Three users: one with an allocation, a vanity name and a beta status, one current."""
    ada = ok(client.post("/user/select", json={
        "user_id": "auth0|ada", "nickname": "ada", "email": "ada@example.com", "name": "Ada Lovelace",
        "identities": [{"provider": "github", "user_id": "gh-1", "connection": "github", "isSocial": True}]}))
    ok(client.post("/user/update", json={**ada, "allocation": ALLOCATION,
                                         "aesthetics": {"theme": {"dark": True}, "font": {"size": 19}}}))
    ok(client.post("/user/update/vanity", json={"id": ada["id"], "vanityname": "ada"}))
    ok(client.post("/user/beta/status", json={"user": ada["id"], "auth0": {"vision": VISION}}))
    ok(client.post("/user/select", json={"user_id": "auth0|alan", "nickname": "alan"}))
    ok(client.post("/user/select", json={"user_id": "auth0|grace", "user_metadata": {"global_id": "g-1"}}))
    ok(client.post("/user/select", json={"user_id": "auth0|ada"}))  # current again
    return ada


def test_users_export_then_import_into_an_empty_database_round_trips_every_field(
        device, client, app, database_url, second_database_url, tmp_path):
    exported = tmp_path / "users.jsonl"
    cli(database_url, "users", "export", str(exported))
    lines = exported.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["profile"]["auth0"]["beta"] == VISION
    cli(second_database_url, "users", "import", str(exported))
    assert cli(second_database_url, "users", "export").stdout == exported.read_text()
    from userservice import create_app
    from conftest import discard

    other = create_app({"TESTING": True, "DATABASE_URL": second_database_url})
    try:
        restored = other.test_client()
        for path in ("/user", "/users", "/users/%s" % device["id"]):
            assert restored.get(path).get_json() == client.get(path).get_json(), path
    finally:
        discard(other)


def test_users_import_with_bad_records_writes_nothing_and_names_each_line(device, app, database_url, tmp_path):
    good = json.loads(cli(database_url, "users", "export").stdout.splitlines()[1])
    fresh = {**good, "profile": {**good["profile"], "id": "fresh-1", "username": "fresh"}, "current": False}
    broken = {**fresh, "profile": {k: v for k, v in fresh["profile"].items() if k != "aesthetics"}}
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([json.dumps(fresh), json.dumps(broken), "{not json", json.dumps({**fresh, "current": 1})]))
    before = dump_database(app)
    process = cli(database_url, "users", "import", str(path), check=False)
    assert process.returncode != 0
    assert "line 2: profile.aesthetics: Missing data for required field." in process.stderr
    assert "line 3: not JSON" in process.stderr
    assert "line 4: current: Not a valid boolean." in process.stderr
    assert "Traceback" not in process.stderr
    assert dump_database(app) == before


def test_users_import_of_a_user_already_on_the_device_writes_nothing(device, app, database_url, tmp_path):
    path = tmp_path / "again.jsonl"
    path.write_text(cli(database_url, "users", "export").stdout)
    before = dump_database(app)
    process = cli(database_url, "users", "import", str(path), check=False)
    assert process.returncode != 0 and "line 1:" in process.stderr and "already on this device" in process.stderr
    assert dump_database(app) == before


def test_users_list_show_clear_and_remove(device, client, database_url):
    listing = cli(database_url, "users", "list").stdout.splitlines()
    assert len(listing) == 3 and listing[0].startswith("* %s" % device["id"])
    assert json.loads(cli(database_url, "users", "show", device["id"]).stdout)["id"] == device["id"]
    cli(database_url, "users", "clear")
    assert client.get("/user").get_json() == {}
    cli(database_url, "users", "remove", "--yes", device["id"])
    assert client.get("/users/%s" % device["id"]).status_code == 404
    missing = cli(database_url, "users", "show", device["id"], check=False)
    assert missing.returncode == 1 and "No user with id" in missing.stderr


def test_users_select_reaches_a_websocket_subscriber_of_a_running_server(serve, database_url):
    server = serve(database_url)
    ws = websocket.create_connection(server.url.replace("http", "ws") + "/user/stream", timeout=15)
    try:
        assert ws.recv() == "null"
        grace = json.loads(ws_select(server, "auth0|grace"))
        assert json.loads(ws.recv())["id"] == grace["id"]
        cli(database_url, "users", "clear")
        assert ws.recv() == "null"
        cli(database_url, "users", "select", grace["id"])
        assert json.loads(ws.recv()) == grace
    finally:
        ws.close()


def ws_select(server, user_id):
    import requests

    return requests.post(server.url + "/user/select", json={"user_id": user_id}, timeout=15).text


def test_doctor_checks_each_part_and_fails_on_any(database_url, tmp_path):
    fresh = cli(database_url, "doctor", "--port", "1", check=False)
    assert fresh.returncode == 1 and "FAIL migrations    migrations are pending: 0001_initial" in fresh.stdout
    cli(database_url, "migrate")
    healthy = cli(database_url, "doctor", "--port", "1")
    names = [line.split()[1] for line in healthy.stdout.splitlines()]
    assert names == ["configuration", "port", "database", "migrations", "oidc"]
    assert all(line.startswith("ok") for line in healthy.stdout.splitlines())
    (tmp_path / "jwks.json").write_text("not a key set")
    broken = subprocess.run([os.path.join(BIN, "userservice"), "doctor", "--port", "1"], capture_output=True,
                            text=True, timeout=60, env={**os.environ, "USERSERVICE_DATABASE_URL": database_url,
                                                        "USERSERVICE_OIDC_JWKS": str(tmp_path / "jwks.json"),
                                                        "USERSERVICE_OIDC_ISSUER": "https://issuer.example/",
                                                        "USERSERVICE_OIDC_AUDIENCE": "pieces"})
    assert broken.returncode == 1
    assert [line.split()[0] for line in broken.stdout.splitlines()] == ["ok", "ok", "ok", "ok", "FAIL"]
    assert "Traceback" not in broken.stdout + broken.stderr
