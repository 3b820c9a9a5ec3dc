"""The use cases behind the endpoints, each one transaction, testable without HTTP.

Writes are jobs run by the group commit (commits.py) with the state row locked, so they
commit one at a time and in the order of their change-log `seq`; each records its change
in the same transaction. Responses are the stored JSON text, so a profile is encoded once
per change.
"""
import collections
import datetime
import json
import re

from peewee import JOIN

from . import db
from .commits import record, sql, write
from .db import database
from .errors import Problem, SignInRequired
from .mapping import profile_from_auth0, profile_from_claims, profile_id_for, timestamp
from .models import BetaStatus, Change, State, User
from .schemas import decode_kept_fields, decode_profile, encode_profile, user_beta_status

DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")

# A user's row as writes need it, read with precompiled SQL (see commits.py for why).
UserRow = collections.namedtuple("UserRow", "id subject username_key vanityname_key document")
USER_ROW_SQL = ('SELECT "id", "subject", "username_key", "vanityname_key", "document" '
                'FROM "users" WHERE "id" = {p}')
SAVE_USER_SQL = ('UPDATE "users" SET "email" = {p}, "username" = {p}, "username_key" = {p}, '
                 '"vanityname" = {p}, "vanityname_key" = {p}, "created" = {p}, "updated" = {p}, '
                 '"document" = {p} WHERE "id" = {p}')
SAVED_COLUMNS = ("email", "username", "username_key", "vanityname", "vanityname_key", "created",
                 "updated", "document")


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def naive_utc(moment):
    """Column copies of timestamps are naive UTC, the same on SQLite and PostgreSQL."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return moment


def check_unique(user_id, username_key, vanityname_key):
    for column, key, field in ((User.username_key, username_key, "username"),
                               (User.vanityname_key, vanityname_key, "vanityname")):
        if key and User.select().where(column == key, User.id != user_id).exists():
            raise Problem(409, "The %s %r is already taken by another user." % (field, key),
                          invalid_params=[{"name": field, "reason": "already taken"}])


def lower_or_none(value):
    return value.lower() if value else None


def stamp(profile, key):
    return naive_utc(profile[key]["value"]) if key in profile else None


def save(profile, row=None, subject=None):
    """Write a profile (insert or replace) and the beta index derived from it; returns its JSON."""
    text = encode_profile(profile)
    username_key = lower_or_none(profile.get("username"))
    vanityname_key = lower_or_none(profile.get("vanityname"))
    check_unique(profile["id"],
                 (row is None or row.username_key != username_key) and username_key,
                 (row is None or row.vanityname_key != vanityname_key) and vanityname_key)
    new_subject = subject and (row is None or row.subject != subject) and not User.select().where(
        User.subject == subject, User.id != profile["id"]).exists()
    columns = (profile.get("email"), profile.get("username"), username_key, profile.get("vanityname"),
               vanityname_key, stamp(profile, "created"), stamp(profile, "updated"), text)
    if row is None:
        User.insert(id=profile["id"], signed_in=naive_utc(utcnow()), subject=subject if new_subject else None,
                    **dict(zip(SAVED_COLUMNS, columns))).execute()
    else:
        database.execute_sql(sql(SAVE_USER_SQL), (*columns, profile["id"]))
        if new_subject:
            User.update(subject=subject).where(User.id == profile["id"]).execute()
    beta = wire_beta(text)
    if row is None or beta != wire_beta(row.document):
        save_beta(profile["id"], beta)
    return text


def wire_beta(document):
    return (json.loads(document).get("auth0") or {}).get("beta")


def save_beta(user_id, vision):
    """Keep the beta index in step with the profile's `auth0.beta` (wire form)."""
    if vision is None:
        BetaStatus.delete().where(BetaStatus.user == user_id).execute()
        return
    text = json.dumps(vision, separators=(",", ":"))
    (BetaStatus.insert(user=user_id, vision=text)
     .on_conflict(conflict_target=[BetaStatus.user], preserve=[BetaStatus.vision]).execute())


def carry_beta(profile, stored):
    """Beta status is owned by /user/beta/status: a write that omits it keeps the stored one."""
    beta = ((stored or {}).get("auth0") or {}).get("beta")
    if beta is None or "beta" in (profile.get("auth0") or {}):
        return
    profile.setdefault("auth0", {"global_id": profile["id"]})["beta"] = beta


def find_row(user_id):
    row = database.execute_sql(sql(USER_ROW_SQL), (user_id,)).fetchone()
    return UserRow(*row) if row else None


def get_row(user_id):
    row = find_row(user_id)
    if row is None:
        raise Problem(404, "No user with id %r on this device." % user_id)
    return row


def current_row(state, user_id=None):
    """The signed-in user's row; 511 when nobody is signed in or `user_id` is someone else."""
    if state.current is None:
        raise SignInRequired()
    if user_id is not None and user_id != state.current:
        raise SignInRequired("User %r is not the signed-in user." % user_id)
    return find_row(state.current)


# --- writes: each use case is a job of the state row, run by commits.write ---------------


def select_user(auth0_user):
    now = utcnow()
    metadata = auth0_user.get("user_metadata") or {}
    user_id = metadata.get("global_id") or profile_id_for(auth0_user["user_id"])

    def job(state):
        row = find_row(user_id)
        stored = decode_profile(row.document) if row else None
        profile = profile_from_auth0(auth0_user, stored, now)
        carry_beta(profile, stored)
        text = save(profile, row, subject=auth0_user.get("user_id"))
        state.current = profile["id"]
        record(state, "select", profile["id"], current=text)
        return text

    return write(job)


def clear_user():
    def job(state):
        if state.current is not None:
            previous, state.current = state.current, None
            record(state, "clear", previous, current="null")

    write(job)


def refresh_user():
    """Re-announce the signed-in user's stored profile to every subscriber."""
    def job(state):
        row = current_row(state)
        record(state, "refresh", row.id, current=row.document)
        return row.document

    return write(job)


def update_user(profile):
    def job(state):
        row = get_row(profile["id"])
        stored = decode_kept_fields(row.document)
        if "created" in stored:
            profile["created"] = stored["created"]
        profile["updated"] = timestamp(utcnow())
        carry_beta(profile, stored)
        text = save(profile, row)
        record(state, "update", row.id, current=text if row.id == state.current else None)
        return text

    return write(job)


def set_beta_status(status):
    vision = (status.get("auth0") or {}).get("vision")

    def job(state):
        row = current_row(state, status["user"])
        profile = decode_profile(row.document)
        auth0 = profile.setdefault("auth0", {"global_id": profile["id"]})
        if vision is None:
            auth0.pop("beta", None)
        else:
            auth0["beta"] = vision
        record(state, "beta", row.id, current=save(profile, row))
        return row.id

    stored = {"user": write(job), "auth0": {"vision": vision} if vision else {}}
    return json.dumps(user_beta_status.dump(stored), separators=(",", ":"))


def update_vanity(request_profile, cloud_domain):
    name = request_profile["vanityname"].lower()
    if not DNS_LABEL.match(name):
        raise Problem(400, "vanityname must be a DNS label: 1 to 63 of a-z, 0-9 and '-', "
                           "not starting or ending with '-'.",
                      invalid_params=[{"name": "vanityname", "reason": "not a valid DNS label"}])

    def job(state):
        row = current_row(state, request_profile["id"])
        profile = decode_profile(row.document)
        allocation = profile.get("allocation")
        if allocation is None:
            raise Problem(404, "The user has no cloud allocation yet: wait for the cloud to connect.")
        profile["vanityname"] = name
        allocation["urls"]["vanity"] = {
            "status": allocation["status"]["cloud"],
            "url": "https://%s.%s" % (name, cloud_domain),
        }
        text = save(profile, row)
        record(state, "vanity", row.id, current=text)
        return text

    return write(job)


def authenticate_from_claims(claims):
    subject = claims["sub"]

    def job(state):
        known = User.get_or_none(User.subject == subject)
        row = find_row(known.id if known else profile_id_for(subject))
        stored = decode_profile(row.document) if row else None
        profile = profile_from_claims(claims, stored, utcnow())
        text = save(profile, row, subject=subject)
        record(state, "token", profile["id"], current=text if profile["id"] == state.current else None)
        return text

    return write(job)


def disconnect_user(user_id):
    def job(state):
        get_row(user_id)
        BetaStatus.delete().where(BetaStatus.user == user_id).execute()
        User.delete().where(User.id == user_id).execute()
        was_current = state.current == user_id
        if was_current:
            state.current = None
        record(state, "disconnect", user_id, current="null" if was_current else None)

    write(job)
    return list_users()


# --- reads --------------------------------------------------------------------------------
# The hot reads are precompiled SQL and are served from memory while the database's commit
# marker is unchanged (db.commit_marker: it moves after every commit, in any process,
# before the writer is answered).

CURRENT_SQL = ('SELECT "users"."document" FROM "state" '
               'JOIN "users" ON "users"."id" = "state"."current" WHERE "state"."id" = 1')
USER_SQL = 'SELECT "document" FROM "users" WHERE "id" = {p}'


class ReadCache:
    """Documents read after the database's commit marker was `key`. A document read after the
    marker was read may be newer than the marker, never older: nothing stale is served."""

    def __init__(self, key):
        self.key = key
        self.current = None
        self.users = {}


_cache = ReadCache(None)


def fetch_one(template, params=()):
    row = database.execute_sql(sql(template), params).fetchone()
    return row[0] if row else None


def read_cache():
    """This process's cache for the present commit marker (a fresh one after any commit)."""
    global _cache
    key = (database.obj, db.commit_marker())
    if _cache.key != key:
        _cache = ReadCache(key)
    return _cache


def current_profile():
    """The current user's profile JSON, or "null"."""
    cache = read_cache()
    if cache.current is None:
        with database.connection_context():
            cache.current = fetch_one(CURRENT_SQL) or "null"
    return cache.current


def get_user(user_id):
    cache = read_cache()
    document = cache.users.get(user_id)
    if document is None:
        with database.connection_context():
            document = fetch_one(USER_SQL, (user_id,))
        if document is None:
            raise Problem(404, "No user with id %r on this device." % user_id)
        cache.users[user_id] = document
    return document


def list_users():
    with database.connection_context():
        documents = User.select(User.document).order_by(User.signed_in, User.id).tuples()
        return '{"iterable":[%s]}' % ",".join(document for (document,) in documents)


def last_seq():
    with database.connection_context():
        return fetch_one(db.LAST_SEQ_SQL)


def changes_after(seq, up_to):
    """Streamed changes with seq in (seq, up_to], oldest first, as (seq, state JSON)."""
    with database.connection_context():
        return list(Change.select(Change.seq, Change.state)
                    .where(Change.seq > seq, Change.seq <= up_to, Change.state.is_null(False))
                    .order_by(Change.seq).tuples())


def log_position():
    """(last seq, oldest seq still kept in the log, current state JSON), read together."""
    with database.connection_context(), database.atomic():
        oldest = Change.select(Change.seq).order_by(Change.seq).limit(1).scalar()
        seq, document = (State.select(State.seq, User.document)
                         .join(User, JOIN.LEFT_OUTER, on=(State.current == User.id))
                         .where(State.id == 1).tuples().get())
        return seq, oldest, document or "null"
