"""Stored profiles: one app's users table as the use cases read and write it.

A profile's `document` is its UserProfile JSON exactly as clients receive it; the columns
beside it are copies of the fields that need lookups, uniqueness or ordering. Writes run
inside the group commit's transaction, on the connection it holds.
"""
import collections
import datetime
import hashlib
import json
import reprlib

from peewee import fn

from .mapping import vanity_url_of
from .problems import Problem, UnknownUser
from .schemas import dump_profile, profile_json

UserRow = collections.namedtuple("UserRow", "id subject document")

Unique = collections.namedtuple("Unique", "column field noun value source")

# What no two users may share, compared case-insensitively: its key column, wire name, the
# noun for it in a 409, how to read it from a profile, and the field it follows from.
UNIQUE = (
    Unique("username_key", "username", "username", lambda profile: profile.get("username"), "username"),
    Unique("vanityname_key", "vanityname", "vanity name", lambda profile: profile.get("vanityname"),
           "vanityname"),
    Unique("vanity_url_key", "allocation.urls.vanity.url", "vanity URL", vanity_url_of, "vanityname"),
)


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def naive_utc(moment):
    """Column copies of timestamps are naive UTC, the same on SQLite and PostgreSQL."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return moment


def unique_key(value):
    """What uniqueness compares: a digest of the lower-cased value, so that a unique index
    holds a value of any length (a PostgreSQL btree entry cannot exceed about 2.7 KB)."""
    return hashlib.sha256(value.lower().encode()).hexdigest() if value else None


def unique_keys(profile):
    """The profile's key for each column of UNIQUE."""
    return {unique.column: unique_key(unique.value(profile)) for unique in UNIQUE}


def stamp(profile, key):
    return naive_utc(profile[key]["value"]) if key in profile else None


def same_but_updated(document, stored):
    """Whether a dumped profile equals the stored one in everything but `updated`: a write
    that changes nothing else writes nothing (and so moves no `updated`)."""
    return ({key: value for key, value in document.items() if key != "updated"}
            == {key: value for key, value in stored.items() if key != "updated"})


class Profiles:
    def __init__(self, storage):
        self.storage = storage
        self.database = storage.database
        self.statements = storage.statements
        self.User = storage.models.User

    def find(self, user_id):
        row = self.statements.user_row.one(self.database, id=user_id)
        return UserRow(*row) if row else None

    def get(self, user_id):
        row = self.find(user_id)
        if row is None:
            raise UnknownUser(user_id)
        return row

    def id_for_subject(self, subject):
        """The id of the user signed in here with this Auth0 user_id / token `sub`, if any."""
        if not subject:
            return None
        User = self.User
        return User.select(User.id).where(User.subject == subject).scalar()

    def taken(self, column, key, user_id):
        User = self.User
        return User.select().where(column == key, User.id != user_id).exists()

    def held_by_others(self, profile, stored=None):
        """Those of UNIQUE whose value in the profile another user already holds (a value the
        stored profile has is this user's: the unique indexes leave it to no one else)."""
        keys, kept = unique_keys(profile), unique_keys(stored) if stored else {}
        return [unique for unique in UNIQUE
                if keys[unique.column] not in (None, kept.get(unique.column))
                and self.taken(getattr(self.User, unique.column), keys[unique.column], profile["id"])]

    def check_unique(self, profile, stored):
        for unique in self.held_by_others(profile, stored):
            shown = reprlib.repr(unique.value(profile))  # a long value, shortened
            raise Problem(409, "The %s %s is already taken by another user." % (unique.noun, shown),
                          invalid_params=[{"name": unique.field, "reason": "already taken"}])

    def save(self, profile, row=None, subject=None, signed_in=None):
        """Write a profile (insert, or replace `row`), unless it equals the stored one but for
        `updated`; returns (its JSON, whether anything was written). 409 when another user
        holds its username, vanity name or vanity URL. A new user signed in first at `signed_in`
        (now, unless an import says otherwise)."""
        document, stored = dump_profile(profile), json.loads(row.document) if row else None
        new_subject = subject and (row is None or row.subject != subject) and not self.taken(
            self.User.subject, subject, profile["id"])
        User = self.User
        if new_subject and row is not None:
            User.update(subject=subject).where(User.id == profile["id"]).execute()
        if stored is not None and same_but_updated(document, stored):
            return row.document, False
        self.check_unique(profile, stored)
        text = profile_json(document)
        columns = {"email": profile.get("email"), "username": profile.get("username"),
                   "vanityname": profile.get("vanityname"), "created": stamp(profile, "created"),
                   "updated": stamp(profile, "updated"), "document": text, **unique_keys(profile)}
        if row is None:
            User.insert(id=profile["id"], signed_in=naive_utc(signed_in or utcnow()),
                        subject=subject if new_subject else None, **columns).execute()
        else:
            self.statements.save_user.execute(self.database, id=profile["id"], **columns)
        return text, True

    def mark_signed_in(self, user_id):
        """Record that this user signed in now: one more than the last sign-in on the device
        (the state row the write holds makes that race-free). A sign-in that changes nothing
        else still moves this mark; it records no change on the stream."""
        User, Latest = self.User, self.User.alias("latest")
        after = Latest.select(fn.COALESCE(fn.MAX(Latest.signed_in_seq), 0) + 1)
        User.update(signed_in_seq=after).where(User.id == user_id).execute()

    def last_signed_in(self):
        """The user who signed in here last, or None."""
        User = self.User
        row = (User.select(User.id, User.subject, User.document)
               .where(User.signed_in_seq.is_null(False)).order_by(User.signed_in_seq.desc())
               .tuples().first())
        return UserRow(*row) if row else None

    def delete(self, user_id):
        self.User.delete().where(self.User.id == user_id).execute()

    def rows(self):
        """(document, subject, first sign-in) of everyone, in the order they first signed in."""
        User = self.User
        with self.storage.connection():
            return list(User.select(User.document, User.subject, User.signed_in)
                        .order_by(User.signed_in, User.id).tuples())

    def listing(self):
        """A Users document of everyone on the device, in the order they first signed in."""
        User = self.User
        with self.storage.connection():
            documents = User.select(User.document).order_by(User.signed_in, User.id).tuples()
            return '{"iterable":[%s]}' % ",".join(document for (document,) in documents)
