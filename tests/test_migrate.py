"""migrate.py: migrations from many processes at once, and a migrated database laid out
exactly as models.py describes, on both backends."""
import datetime
import json
import logging
import os
import subprocess
import sys

import pytest
from peewee import IntegrityError

from userservice import create_app, migrate, models
from conftest import discard, parts


def test_migrate_from_many_processes_applies_the_schema_once(database_url):
    env = {**os.environ, "USERSERVICE_DATABASE_URL": database_url}
    processes = [subprocess.Popen([sys.executable, "-m", "userservice.cli", "migrate"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for _ in range(4)]
    outputs = [process.communicate(timeout=60)[0] for process in processes]
    assert [process.returncode for process in processes] == [0] * 4, outputs
    assert sum("applied: 0001_initial" in output for output in outputs) == 1, outputs
    app = create_app({"DATABASE_URL": database_url, "MIGRATE_ON_START": False})
    try:
        app_storage = parts(app).storage
        assert migrate.migrate(app_storage) == []
        with app_storage.connection():
            assert app_storage.models.State.select().count() == 1
    finally:
        discard(app)


def test_migrate_again_applies_nothing(service):
    assert migrate.migrate(service.storage) == []


def layout(app_storage, tables):
    """Each table's columns (name, type, nullable, primary key) and indexes (columns, unique)."""
    database, schema = app_storage.database, migrate.current_schema(app_storage)
    with app_storage.connection():
        return {table: (sorted((c.name, c.data_type.lower(), c.null, c.primary_key)
                               for c in database.get_columns(table, schema)),
                        sorted((tuple(i.columns), i.unique) for i in database.get_indexes(table, schema)
                               if not i.name.endswith("_pkey")))
                for table in tables}


def test_migrated_database_is_laid_out_as_the_models_say(service, second_database_url):
    """The migrations and models.py must not drift apart: tables the models create from
    scratch equal, column for column and index for index, those the migrations built."""
    app = create_app({"DATABASE_URL": second_database_url, "MIGRATE_ON_START": False})
    try:
        created = parts(app).storage
        with created.connection():
            created.database.create_tables(models.bind(created.database).__dict__.values())
        names = [model._meta.table_name for model in models.TABLES]
        with service.storage.connection():
            migrated_tables = service.storage.database.get_tables(schema=migrate.current_schema(service.storage))
        assert sorted(t for t in migrated_tables if t != "schema_migration") == sorted(names)
        assert layout(service.storage, names) == layout(created, names)
    finally:
        discard(app)


# --- 0003: names no two users share, repaired deterministically, then held by the indexes ---

AESTHETICS = {"theme": {"dark": False}, "font": {"size": 14}}


def allocation(vanity_url=None):
    urls = {"base": {"status": "RUNNING", "url": "https://base.pieces.cloud"},
            "id": {"status": "RUNNING", "url": "https://a1.pieces.cloud"}}
    if vanity_url:
        urls["vanity"] = {"status": "RUNNING", "url": vanity_url}
    return {"id": "a1", "user": "u", "project": "p", "status": {"cloud": "RUNNING"}, "urls": urls}


# (id, first signed in on day, profile fields) as issue 11's bugs left them: A signed in again
# and lost its vanity name but kept the URL, then B claimed the same name. B's row is written
# first: the repair goes by sign-in order, not by the order rows happen to be read in.
BEFORE_0003 = [
    ("b", 2, {"username": "bee", "vanityname": "Shared", "allocation": allocation("https://shared.pieces.cloud")}),
    ("a", 1, {"username": "John", "allocation": allocation("https://shared.pieces.cloud")}),
    ("c", 3, {"username": "cee", "vanityname": "cee", "allocation": allocation("https://old.pieces.cloud")}),
]


@pytest.fixture
def at_0002(second_database_url):
    """An app whose database has migrations up to 0002 and BEFORE_0003's rows, B current."""
    app = create_app({"DATABASE_URL": second_database_url, "MIGRATE_ON_START": False})
    storage = parts(app).storage
    with storage.connection():
        migrate.runner(storage).up(target="0002_drop_beta_statuses")
        insert = 'INSERT INTO "users" ("id", "username", "username_key", "vanityname", "vanityname_key", ' \
                 '"signed_in", "document") VALUES ({0}, {0}, {0}, {0}, {0}, {0}, {0})'.format(storage.database.param)
        for user_id, day, fields in BEFORE_0003:
            document = json.dumps({"id": user_id, "aesthetics": AESTHETICS, **fields}, separators=(",", ":"))
            name = fields.get("vanityname")
            storage.database.execute_sql(insert, (
                user_id, fields["username"], fields["username"].lower(), name, name and name.lower(),
                datetime.datetime(2024, 1, day), document))
        storage.database.execute_sql('UPDATE "state" SET "seq" = 7, "current" = \'b\' WHERE "id" = 1')
    yield app
    discard(app)


def vanity_of(profile):
    return (profile.get("vanityname"), profile["allocation"]["urls"].get("vanity", {}).get("url"))


def test_0003_repairs_shared_names_in_sign_in_order_and_logs_each_repair(at_0002, caplog):
    caplog.set_level(logging.WARNING, logger="userservice.migrations")
    assert migrate.migrate(parts(at_0002).storage) == ["0003_unique_names_any_length", "0004_signed_in_seq"]
    users = {user["id"]: user for user in at_0002.test_client().get("/users").get_json()["iterable"]}
    assert [(user_id, users[user_id].get("username"), *vanity_of(users[user_id])) for user_id in "abc"] == [
        ("a", "John", "shared", "https://shared.pieces.cloud"),  # the name its URL kept, restored
        ("b", "bee", None, None),  # signed in later: its copy of A's vanity name is cleared
        ("c", "cee", "cee", "https://cee.pieces.cloud"),  # the URL follows the name
    ]
    logged = [record.getMessage() for record in caplog.records]
    assert any("user a" in line and "restored" in line for line in logged), logged
    assert any("user b" in line and "'shared' and its vanity URL cleared: user a holds it" in line
               for line in logged), logged
    assert any("user c" in line and "rewritten" in line for line in logged), logged
    assert "repaired 3 of 3 users" in logged[-1]


def test_0003_announces_a_repaired_current_user_on_the_stream(at_0002):
    migrate.migrate(parts(at_0002).storage)
    change_log = parts(at_0002).change_log
    seq, _oldest, state = change_log.position()
    assert seq == 8 and change_log.read_after(7, up_to=8).changes == [(8, state)]
    assert at_0002.test_client().get("/user").get_json() == {"user": json.loads(state)}


@pytest.mark.parametrize("column", ["username_key", "vanityname_key", "vanity_url_key", "subject"])
def test_unique_indexes_refuse_a_duplicate_written_past_the_store(service, column):
    User = service.storage.models.User
    row = {"signed_in": datetime.datetime(2024, 1, 1), "document": "{}", column: "same"}
    with service.storage.connection():
        User.insert(id="first", **row).execute()
        with pytest.raises(IntegrityError), service.storage.database.atomic():
            User.insert(id="second", **row).execute()


def test_upgrade_records_the_current_user_as_the_last_to_sign_in(database_url):
    """0004 adds signed_in_seq: the user current at the upgrade is the one POST /os/sign_in
    signs in again; users nobody knows the last sign-in of are not signed in by it."""
    app = create_app({"DATABASE_URL": database_url, "MIGRATE_ON_START": False})
    try:
        app_storage = parts(app).storage
        with migrate.migration_lock(app_storage), app_storage.connection():
            migrate.runner(app_storage).up(target="0003_unique_names_any_length")
            for user_id in ("current", "other"):
                app_storage.database.execute_sql(
                    'INSERT INTO "users" ("id", "signed_in", "document") VALUES (%s, %s, %s)'
                    % ((app_storage.database.param,) * 3),
                    (user_id, datetime.datetime(2024, 1, 1), '{"id":"%s"}' % user_id))
            app_storage.database.execute_sql('UPDATE "state" SET "seq" = 7, "current" = \'current\' WHERE "id" = 1')
        assert migrate.migrate(app_storage) == ["0004_signed_in_seq"]
        User = app_storage.models.User
        with app_storage.connection():
            assert dict(User.select(User.id, User.signed_in_seq).tuples()) == {"current": 7, "other": None}
            assert parts(app).profiles.last_signed_in().id == "current"
    finally:
        discard(app)
