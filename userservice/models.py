"""Peewee models. The schema itself is created by the numbered files in migrations/."""
from peewee import BigIntegerField, CharField, DateTimeField, ForeignKeyField, IntegerField, Model, TextField

from .db import database


class BaseModel(Model):
    class Meta:
        database = database
        legacy_table_names = False


class User(BaseModel):
    """A user known on this device. `document` is its UserProfile exactly as sent on the wire;
    the other columns are copies of the fields that need lookups, uniqueness or ordering."""

    id = CharField(primary_key=True)
    subject = CharField(null=True, unique=True)  # the Auth0 user_id / token `sub`
    email = CharField(null=True, index=True)
    username = CharField(null=True)
    username_key = CharField(null=True, unique=True)  # lower-cased: uniqueness ignores case
    vanityname = CharField(null=True)
    vanityname_key = CharField(null=True, unique=True)
    created = DateTimeField(null=True)
    updated = DateTimeField(null=True)
    signed_in = DateTimeField(index=True)  # first sign-in here; orders GET /users
    document = TextField()

    class Meta:
        table_name = "users"


class BetaStatus(BaseModel):
    """A user's beta range (`UserBetaStatus.auth0.vision`), as wire JSON."""

    user = ForeignKeyField(User, primary_key=True, on_delete="CASCADE", column_name="user_id")
    vision = TextField()

    class Meta:
        table_name = "beta_statuses"


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
