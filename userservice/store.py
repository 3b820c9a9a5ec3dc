"""The use cases behind the endpoints, each one transaction, testable without HTTP.

Every write first locks the single state row, so writes commit one at a time and in the
order of their change-log `seq`; the change row is written in the same transaction as the
change itself. Responses are the stored JSON text, so a profile is encoded once per change.
"""
import contextlib
import datetime
import json
import re

from flask import current_app
from peewee import JOIN, IntegrityError

from . import db
from .db import database
from .errors import Problem, SignInRequired
from .mapping import profile_from_auth0, profile_from_claims, profile_id_for, timestamp
from .models import BetaStatus, Change, State, User
from .schemas import decode_kept_fields, decode_profile, encode_profile, user_beta_status

DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
PRUNE_EVERY = 100



def on_commit(seq):
    """Called after each change commits in this process; the stream's listener replaces it."""


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def naive_utc(moment):
    """Column copies of timestamps are naive UTC, the same on SQLite and PostgreSQL."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return moment


@contextlib.contextmanager
def writing():
    """A write transaction holding the state row: `with writing() as state: ...`."""
    try:
        with database.connection_context(), db.write_transaction():
            yield db.for_update(State.select().where(State.id == 1)).get()
    except IntegrityError as error:
        raise Problem(409, "The change conflicts with another user's data.") from error


def record(state, kind, user_id, current=None):
    """Append the change to the log and advance the state row, in the caller's transaction.

    `current` is the current user's profile JSON (or "null") after a change that touched
    the current user, None after one that did not: only the former are streamed."""
    state.seq += 1
    Change.insert(seq=state.seq, at=naive_utc(utcnow()), kind=kind, user=user_id, state=current).execute()
    State.update(seq=state.seq, current=state.current).where(State.id == 1).execute()
    prune_log(state.seq, current_app.config["CHANGE_LOG_KEEP"])
    db.notify_change(state.seq)
    database.after_commit(lambda seq=state.seq: on_commit(seq))


def prune_log(seq, keep):
    """Keep the last `keep` changes (at least 1) for resume, pruning every PRUNE_EVERY
    changes or every `keep` if fewer, so the log never holds much more than asked."""
    keep = max(1, keep)
    if seq % min(PRUNE_EVERY, keep) == 0:
        Change.delete().where(Change.seq <= seq - keep).execute()


def check_unique(user_id, username_key, vanityname_key):
    for column, key, field in ((User.username_key, username_key, "username"),
                               (User.vanityname_key, vanityname_key, "vanityname")):
        if key and User.select().where(column == key, User.id != user_id).exists():
            raise Problem(409, "The %s %r is already taken by another user." % (field, key),
                          invalid_params=[{"name": field, "reason": "already taken"}])


def lower_or_none(value):
    return value.lower() if value else None


def save(profile, row=None, subject=None):
    """Write a profile (insert or replace) and the beta index derived from it; returns its JSON."""
    text = encode_profile(profile)
    columns = {
        "email": profile.get("email"),
        "username": profile.get("username"),
        "username_key": lower_or_none(profile.get("username")),
        "vanityname": profile.get("vanityname"),
        "vanityname_key": lower_or_none(profile.get("vanityname")),
        "created": naive_utc(profile["created"]["value"]) if "created" in profile else None,
        "updated": naive_utc(profile["updated"]["value"]) if "updated" in profile else None,
        "document": text,
    }
    def changed(column):
        return row is None or getattr(row, column) != columns[column]

    check_unique(profile["id"], changed("username_key") and columns["username_key"],
                 changed("vanityname_key") and columns["vanityname_key"])
    if subject and (row is None or row.subject != subject) and not User.select().where(
            User.subject == subject, User.id != profile["id"]).exists():
        columns["subject"] = subject
    if row is None:
        User.insert(id=profile["id"], signed_in=naive_utc(utcnow()), **columns).execute()
    else:
        User.update(**columns).where(User.id == profile["id"]).execute()
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


def get_row(user_id):
    row = User.get_or_none(User.id == user_id)
    if row is None:
        raise Problem(404, "No user with id %r on this device." % user_id)
    return row


def current_row(state, user_id=None):
    """The signed-in user's row; 511 when nobody is signed in or `user_id` is someone else."""
    if state.current is None:
        raise SignInRequired()
    if user_id is not None and user_id != state.current:
        raise SignInRequired("User %r is not the signed-in user." % user_id)
    return User.get(User.id == state.current)


# --- writes -------------------------------------------------------------------------------


def select_user(auth0_user):
    now = utcnow()
    metadata = auth0_user.get("user_metadata") or {}
    with writing() as state:
        row = User.get_or_none(User.id == (metadata.get("global_id") or profile_id_for(auth0_user["user_id"])))
        stored = decode_profile(row.document) if row else None
        profile = profile_from_auth0(auth0_user, stored, now)
        carry_beta(profile, stored)
        text = save(profile, row, subject=auth0_user.get("user_id"))
        state.current = profile["id"]
        record(state, "select", profile["id"], current=text)
    return text


def clear_user():
    with writing() as state:
        if state.current is not None:
            previous, state.current = state.current, None
            record(state, "clear", previous, current="null")


def refresh_user():
    """Re-announce the signed-in user's stored profile to every subscriber."""
    with writing() as state:
        row = current_row(state)
        record(state, "refresh", row.id, current=row.document)
    return row.document


def update_user(profile):
    with writing() as state:
        row = get_row(profile["id"])
        stored = decode_kept_fields(row.document)
        if "created" in stored:
            profile["created"] = stored["created"]
        profile["updated"] = timestamp(utcnow())
        carry_beta(profile, stored)
        text = save(profile, row)
        record(state, "update", row.id, current=text if row.id == state.current else None)
    return text


def set_beta_status(status):
    vision = (status.get("auth0") or {}).get("vision")
    with writing() as state:
        row = current_row(state, status["user"])
        profile = decode_profile(row.document)
        auth0 = profile.setdefault("auth0", {"global_id": profile["id"]})
        if vision is None:
            auth0.pop("beta", None)
        else:
            auth0["beta"] = vision
        record(state, "beta", row.id, current=save(profile, row))
    stored = {"user": row.id, "auth0": {"vision": vision} if vision else {}}
    return json.dumps(user_beta_status.dump(stored), separators=(",", ":"))


def update_vanity(request_profile, cloud_domain):
    name = request_profile["vanityname"].lower()
    if not DNS_LABEL.match(name):
        raise Problem(400, "vanityname must be a DNS label: 1 to 63 of a-z, 0-9 and '-', "
                           "not starting or ending with '-'.",
                      invalid_params=[{"name": "vanityname", "reason": "not a valid DNS label"}])
    with writing() as state:
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


def authenticate_from_claims(claims):
    subject = claims["sub"]
    with writing() as state:
        row = (User.get_or_none(User.subject == subject)
               or User.get_or_none(User.id == profile_id_for(subject)))
        stored = decode_profile(row.document) if row else None
        profile = profile_from_claims(claims, stored, utcnow())
        text = save(profile, row, subject=subject)
        record(state, "token", profile["id"], current=text if profile["id"] == state.current else None)
    return text


def disconnect_user(user_id):
    with writing() as state:
        row = get_row(user_id)
        BetaStatus.delete().where(BetaStatus.user == user_id).execute()
        row.delete_instance()
        was_current = state.current == user_id
        if was_current:
            state.current = None
        record(state, "disconnect", user_id, current="null" if was_current else None)
    return list_users()


# --- reads --------------------------------------------------------------------------------
# The hot reads are precompiled SQL (Peewee's query building costs more than the query) and
# are served from memory while the state row's seq is unchanged: every change, committed by
# any process, advances that seq in its own transaction. Identifiers are quoted the way both
# SQLite and PostgreSQL accept.

LAST_SEQ_SQL = 'SELECT "seq" FROM "state" WHERE "id" = 1'
CURRENT_SQL = ('SELECT "users"."document" FROM "state" '
               'JOIN "users" ON "users"."id" = "state"."current" WHERE "state"."id" = 1')
USER_SQL = 'SELECT "document" FROM "users" WHERE "id" = %s'


class ReadCache:
    """Documents read at one seq of one database. A document read after the seq was may be
    newer than the seq, never older, so nothing stale is ever served from here."""

    def __init__(self, key):
        self.key = key
        self.current = None
        self.users = {}


_cache = ReadCache(None)


def fetch_one(sql, params=()):
    row = database.execute_sql(sql, params).fetchone()
    return row[0] if row else None


def read_cache():
    """This process's cache for the database's present seq (a fresh one after any change)."""
    global _cache
    key = (database.obj, fetch_one(LAST_SEQ_SQL))
    if _cache.key != key:
        _cache = ReadCache(key)
    return _cache


def current_profile():
    """The current user's profile JSON, or "null"."""
    with database.connection_context():
        cache = read_cache()
        if cache.current is None:
            cache.current = fetch_one(CURRENT_SQL) or "null"
        return cache.current


def get_user(user_id):
    with database.connection_context():
        cache = read_cache()
        document = cache.users.get(user_id)
        if document is None:
            document = fetch_one(USER_SQL % database.param, (user_id,))
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
        return fetch_one(LAST_SEQ_SQL)


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
