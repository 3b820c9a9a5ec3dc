"""migrate.py: migrations from many processes at once, and a migrated database laid out
exactly as models.py describes, on both backends."""
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
