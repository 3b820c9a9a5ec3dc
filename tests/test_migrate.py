"""migrate.py: migrations from many processes at once, and a migrated database laid out
exactly as models.py describes, on both backends."""
import datetime
import os
import subprocess
import sys

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


def test_upgrade_records_the_current_user_as_the_last_to_sign_in(database_url):
    """0003 adds signed_in_seq: the user current at the upgrade is the one POST /os/sign_in
    signs in again; users nobody knows the last sign-in of are not signed in by it."""
    app = create_app({"DATABASE_URL": database_url, "MIGRATE_ON_START": False})
    try:
        app_storage = parts(app).storage
        with migrate.migration_lock(app_storage), app_storage.connection():
            migrate.runner(app_storage).up(target="0002_drop_beta_statuses")
            for user_id in ("current", "other"):
                app_storage.database.execute_sql(
                    'INSERT INTO "users" ("id", "signed_in", "document") VALUES (%s, %s, %s)'
                    % ((app_storage.database.param,) * 3),
                    (user_id, datetime.datetime(2024, 1, 1), '{"id":"%s"}' % user_id))
            app_storage.database.execute_sql('UPDATE "state" SET "seq" = 7, "current" = \'current\' WHERE "id" = 1')
        assert migrate.migrate(app_storage) == ["0003_signed_in_seq"]
        User = app_storage.models.User
        with app_storage.connection():
            assert dict(User.select(User.id, User.signed_in_seq).tuples()) == {"current": 7, "other": None}
            assert parts(app).profiles.last_signed_in().id == "current"
    finally:
        discard(app)
