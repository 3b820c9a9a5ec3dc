"""Names no two users share, enforced by unique indexes over digests, and lookup copies of any
length; existing data is repaired first, deterministically, and every repair is logged.

Before this, a username, vanity name or email longer than 255 characters failed on
PostgreSQL (VARCHAR(255)), re-sign-in dropped vanity names while their vanity URLs stayed, and
so two users could end up sharing one. The repair, in the order users first signed in here
(`signed_in`, then `id`):

1. vanity names are lower-cased (as the service now stores them);
2. a vanity URL without a vanity name gives the name back: its host's first label, which is
   what re-sign-in used to drop;
3. a vanity URL whose first label is not the vanity name is rewritten to it (its domain kept);
   one that has no domain to keep is removed;
4. a username, vanity name or vanity URL that an earlier user already holds (compared
   case-insensitively) is cleared on the later user, a vanity name with its vanity URL.

The key columns then hold digests of the lower-cased values (profiles.unique_key), the same
function frozen here so that this migration means the same thing whatever the code becomes.
"""
import datetime
import hashlib
import json
import logging
from urllib.parse import urlsplit

from peewee import CharField, TextField

log = logging.getLogger("userservice.migrations")

# UserProfileSchema's field order, so that a repaired document reads like one it encoded.
PROFILE_ORDER = ("schema", "picture", "email", "created", "updated", "username", "id", "name",
                 "aesthetics", "vanityname", "allocation", "providers", "auth0")


def unique_key(value):
    return hashlib.sha256(value.lower().encode()).hexdigest() if value else None


def vanity_of(profile):
    return ((profile.get("allocation") or {}).get("urls") or {}).get("vanity")


def drop_vanity(profile):
    profile.pop("vanityname", None)
    if vanity_of(profile) is not None:
        del profile["allocation"]["urls"]["vanity"]


def align_vanity(profile):
    """Steps 1 to 3 for one profile; returns what was done, for the log."""
    notes = []
    name = profile.get("vanityname")
    if name and name != name.lower():
        profile["vanityname"] = name = name.lower()
        notes.append("vanity name lower-cased to %r" % name)
    vanity = vanity_of(profile)
    if vanity is None:
        return notes
    label, _dot, domain = (urlsplit(vanity["url"]).hostname or "").partition(".")
    if not name and label and domain:
        profile["vanityname"] = label
        notes.append("vanity name %r restored from its vanity URL" % label)
    elif not domain:
        del profile["allocation"]["urls"]["vanity"]
        notes.append("vanity URL %r removed: no vanity name's URL" % vanity["url"])
    elif label != name:
        notes.append("vanity URL %r rewritten to vanity name %r" % (vanity["url"], name))
        vanity["url"] = "https://%s.%s" % (name, domain)
    return notes


def release_duplicates(profile, held):
    """Step 4 for one profile, given the keys earlier users hold; returns what was done."""
    notes = []
    username = profile.get("username")
    if username and held["username"].get(unique_key(username)):
        notes.append("username %r cleared: user %s holds it" % (username, held["username"][unique_key(username)]))
        del profile["username"]
    name, vanity = profile.get("vanityname"), vanity_of(profile)
    holder = held["vanityname"].get(unique_key(name)) or (vanity and held["vanity_url"].get(unique_key(vanity["url"])))
    if holder:
        notes.append("vanity name %r and its vanity URL cleared: user %s holds it" % (name, holder))
        drop_vanity(profile)
    return notes


def keys(profile):
    vanity = vanity_of(profile)
    return {"username": unique_key(profile.get("username")), "vanityname": unique_key(profile.get("vanityname")),
            "vanity_url": unique_key(vanity["url"] if vanity else None)}


def repair(users):
    """(id, profile) in sign-in order -> [(id, profile, notes)], profiles repaired in place."""
    held = {"username": {}, "vanityname": {}, "vanity_url": {}}
    repaired = []
    for user_id, profile in users:
        notes = align_vanity(profile)
        notes += release_duplicates(profile, held)
        for kind, key in keys(profile).items():
            if key:
                held[kind][key] = user_id
        repaired.append((user_id, profile, notes))
    return repaired


def encode(profile):
    ordered = {key: profile[key] for key in PROFILE_ORDER if key in profile}
    ordered.update((key, value) for key, value in profile.items() if key not in ordered)
    return json.dumps(ordered, separators=(",", ":"), ensure_ascii=False)


def up(migrator, db):
    rows = db.execute_sql('SELECT "id", "document" FROM "users" ORDER BY "signed_in", "id"').fetchall()
    repaired = repair([(user_id, json.loads(document)) for user_id, document in rows])
    # Old keys (lower-cased values) could equal new ones (digests): clear them all first.
    db.execute_sql('UPDATE "users" SET "username_key" = NULL, "vanityname_key" = NULL')
    migrator.migrate(
        migrator.drop_index("users", "users_email"),
        migrator.alter_column_type("users", "email", TextField(null=True)),
        migrator.alter_column_type("users", "username", TextField(null=True)),
        migrator.alter_column_type("users", "vanityname", TextField(null=True)),
        migrator.add_column("users", "vanity_url_key", CharField(null=True)),
        migrator.add_index("users", ("vanity_url_key",), unique=True),
    )
    original = dict(rows)
    param = db.param
    save = ('UPDATE "users" SET "document" = {0}, "username" = {0}, "vanityname" = {0}, "username_key" = {0}, '
            '"vanityname_key" = {0}, "vanity_url_key" = {0} WHERE "id" = {0}').format(param)
    for user_id, profile, notes in repaired:
        for note in notes:
            log.warning("migration 0003 repaired user %s: %s", user_id, note)
        document = encode(profile) if notes else original[user_id]
        db.execute_sql(save, (document, profile.get("username"), profile.get("vanityname"),
                              *keys(profile).values(), user_id))
    changed = {user_id: encode(profile) for user_id, profile, notes in repaired if notes}
    if changed:
        log.warning("migration 0003 repaired %d of %d users (see above)", len(changed), len(repaired))
        announce_current(db, changed)


def announce_current(db, changed):
    """A repaired current user is a change of the current user: logged for the stream, so
    that what was last sent stays what GET /user holds."""
    seq, current = db.execute_sql('SELECT "seq", "current" FROM "state" WHERE "id" = 1').fetchone()
    if current not in changed:
        return
    param = db.param
    db.execute_sql('INSERT INTO "changes" ("seq", "at", "kind", "user", "state") VALUES ({0}, {0}, {0}, {0}, {0})'
                   .format(param), (seq + 1, datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None),
                                    "repair", current, changed[current]))
    db.execute_sql('UPDATE "state" SET "seq" = {0} WHERE "id" = 1'.format(param), (seq + 1,))
