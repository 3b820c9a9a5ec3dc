"""Stored profiles: one app's users table as the use cases read and write it.

A profile's `document` is its UserProfile JSON exactly as clients receive it; the columns
beside it are copies of the fields that need lookups, uniqueness or ordering. Writes run
inside the group commit's transaction, on the connection it holds.
"""
import collections
import datetime

from .problems import Problem, UnknownUser
from .schemas import encode_profile

UserRow = collections.namedtuple("UserRow", "id subject username_key vanityname_key document")


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def naive_utc(moment):
    """Column copies of timestamps are naive UTC, the same on SQLite and PostgreSQL."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return moment


def lower_or_none(value):
    return value.lower() if value else None


def stamp(profile, key):
    return naive_utc(profile[key]["value"]) if key in profile else None


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
        User = self.User
        return User.select(User.id).where(User.subject == subject).scalar()

    def taken(self, column, key, user_id):
        User = self.User
        return User.select().where(column == key, User.id != user_id).exists()

    def check_unique(self, user_id, username_key, vanityname_key):
        for column, key, field in ((self.User.username_key, username_key, "username"),
                                   (self.User.vanityname_key, vanityname_key, "vanityname")):
            if key and self.taken(column, key, user_id):
                raise Problem(409, "The %s %r is already taken by another user." % (field, key),
                              invalid_params=[{"name": field, "reason": "already taken"}])

    def save(self, profile, row=None, subject=None):
        """Write a profile (insert, or replace `row`); returns its JSON."""
        text = encode_profile(profile)
        username_key = lower_or_none(profile.get("username"))
        vanityname_key = lower_or_none(profile.get("vanityname"))
        self.check_unique(profile["id"],
                          (row is None or row.username_key != username_key) and username_key,
                          (row is None or row.vanityname_key != vanityname_key) and vanityname_key)
        new_subject = subject and (row is None or row.subject != subject) and not self.taken(
            self.User.subject, subject, profile["id"])
        columns = {"email": profile.get("email"), "username": profile.get("username"),
                   "username_key": username_key, "vanityname": profile.get("vanityname"),
                   "vanityname_key": vanityname_key, "created": stamp(profile, "created"),
                   "updated": stamp(profile, "updated"), "document": text}
        User = self.User
        if row is None:
            User.insert(id=profile["id"], signed_in=naive_utc(utcnow()),
                        subject=subject if new_subject else None, **columns).execute()
        else:
            self.statements.save_user.execute(self.database, id=profile["id"], **columns)
            if new_subject:
                User.update(subject=subject).where(User.id == profile["id"]).execute()
        return text

    def mark_signed_in(self, user_id, seq):
        """Record a sign-in by the seq of the change that recorded it."""
        self.User.update(signed_in_seq=seq).where(self.User.id == user_id).execute()

    def last_signed_in(self):
        """The user who signed in here last, or None."""
        User = self.User
        row = (User.select(User.id, User.subject, User.username_key, User.vanityname_key, User.document)
               .where(User.signed_in_seq.is_null(False)).order_by(User.signed_in_seq.desc())
               .tuples().first())
        return UserRow(*row) if row else None

    def delete(self, user_id):
        self.User.delete().where(self.User.id == user_id).execute()

    def listing(self):
        """A Users document of everyone on the device, in the order they first signed in."""
        User = self.User
        with self.storage.connection():
            documents = User.select(User.document).order_by(User.signed_in, User.id).tuples()
            return '{"iterable":[%s]}' % ",".join(document for (document,) in documents)
