"""The table layout, written once.

The classes here are bound to no database: every app binds copies of them to its own
(`bind`), because Peewee binds a model class to one database and two apps in one process
must share nothing. The numbered files in migrations/ build the schema step by step;
tests/test_migrate.py checks that a migrated database has exactly this layout.
"""
import types

from peewee import BigIntegerField, CharField, DateTimeField, IntegerField, Model, TextField


class BaseModel(Model):
    class Meta:
        legacy_table_names = False


class User(BaseModel):
    """A user known on this device. `document` is its UserProfile exactly as sent on the wire;
    the other columns are copies of the fields that need lookups, uniqueness or ordering."""

    id = CharField(primary_key=True)  # at most 255 characters (schemas.MAX_ID)
    subject = CharField(null=True, unique=True)  # the Auth0 user_id / token `sub`, as long
    email = TextField(null=True)
    username = TextField(null=True)
    vanityname = TextField(null=True)
    # What no two users may share: digests of the lower-cased values (profiles.unique_key),
    # so that uniqueness ignores case and a unique index holds values of any length.
    username_key = CharField(null=True, unique=True)
    vanityname_key = CharField(null=True, unique=True)
    vanity_url_key = CharField(null=True, unique=True)
    created = DateTimeField(null=True)
    updated = DateTimeField(null=True)
    signed_in = DateTimeField(index=True)  # first sign-in here; orders GET /users
    # The order of the user's last sign-in here (select, token, /os/sign_in): one more than
    # the device's highest at each sign-in, so no two share it; NULL if none was recorded
    # (signed in before migration 0004). POST /os/sign_in signs the highest in again.
    signed_in_seq = BigIntegerField(null=True)
    document = TextField()

    class Meta:
        table_name = "users"


class State(BaseModel):
    """The single row (id 1) every write locks: who is current, and the last change's seq."""

    id = IntegerField(primary_key=True)
    seq = BigIntegerField(default=0)
    current = CharField(null=True)

    class Meta:
        table_name = "state"


class Change(BaseModel):
    """The change log, written in the same transaction as the change it records.

    `state` is the current user's profile JSON (or `null`) after a change that touched the
    current user, and NULL for changes that did not: only the former are streamed."""

    seq = BigIntegerField(primary_key=True)
    at = DateTimeField(index=True)
    kind = CharField()
    user = CharField(null=True)
    state = TextField(null=True)

    class Meta:
        table_name = "changes"


TABLES = (User, State, Change)


def bind(database):
    """Copies of the models bound to `database`, as a namespace: `bind(db).User`."""
    return types.SimpleNamespace(**{model.__name__: bound_copy(model, database) for model in TABLES})


def bound_copy(model, database):
    """A subclass of `model` bound to `database`: it inherits the fields and indexes, while
    the table name, which Peewee does not inherit, is named again."""
    meta = type("Meta", (), {"database": database, "table_name": model._meta.table_name})
    return type(model.__name__, (model,), {"Meta": meta, "__module__": __name__})
