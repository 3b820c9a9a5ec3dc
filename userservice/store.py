"""The use cases behind the endpoints, each one transaction, testable without HTTP.

Writes are jobs the app's group commit (commits.py) runs with the change log's head (the
state row) locked, so they commit one at a time and in the order of their change-log `seq`;
each records its change in the same transaction. Responses are the stored JSON text, so a
profile is encoded once per change.
"""
import datetime
import json

from peewee import IntegrityError

from . import extension
from .mapping import profile_from_auth0, profile_from_claims, profile_id_for, timestamp
from .problems import Problem, SignInRequired
from .profiles import utcnow
from .schemas import decode_kept_fields, decode_profile, user_beta_status


def carry_beta(profile, stored):
    """Beta status is owned by /user/beta/status: a write that omits it keeps the stored one."""
    beta = ((stored or {}).get("auth0") or {}).get("beta")
    if beta is None or "beta" in (profile.get("auth0") or {}):
        return
    profile.setdefault("auth0", {"global_id": profile["id"]})["beta"] = beta


def current_row(profiles, head, user_id=None):
    """The signed-in user's row; 511 when nobody is signed in or `user_id` is someone else."""
    if head.current is None:
        raise SignInRequired()
    if user_id is not None and user_id != head.current:
        raise SignInRequired("User %r is not the signed-in user." % user_id)
    return profiles.find(head.current)


# --- writes: each use case is a job of the change log's head, run by the group commit ------


def select_user(auth0_user):
    service, now = extension.current(), utcnow()
    metadata = auth0_user.get("user_metadata") or {}
    user_id = metadata.get("global_id") or profile_id_for(auth0_user["user_id"])

    def job(head):
        row = service.profiles.find(user_id)
        stored = decode_profile(row.document) if row else None
        profile = profile_from_auth0(auth0_user, stored, now)
        carry_beta(profile, stored)
        text = service.profiles.save(profile, row, subject=auth0_user.get("user_id"))
        head.current = profile["id"]
        head.record("select", profile["id"], current=text)
        return text

    return service.commits.run(job)


def select_known_user(user_id):
    """Make a user already on the device current, its stored profile unchanged: /user/select
    needs the Auth0 user, which the device does not keep (tokens, identities)."""
    service = extension.current()

    def job(head):
        row = service.profiles.get(user_id)
        head.current = row.id
        head.record("select", row.id, current=row.document)
        return row.document

    return service.commits.run(job)


def clear_user():
    def job(head):
        if head.current is not None:
            previous, head.current = head.current, None
            head.record("clear", previous, current="null")

    extension.current().commits.run(job)


def refresh_user():
    """Re-announce the signed-in user's stored profile to every subscriber."""
    service = extension.current()

    def job(head):
        row = current_row(service.profiles, head)
        head.record("refresh", row.id, current=row.document)
        return row.document

    return service.commits.run(job)


def update_user(profile):
    service = extension.current()

    def job(head):
        row = service.profiles.get(profile["id"])
        stored = decode_kept_fields(row.document)
        if "created" in stored:
            profile["created"] = stored["created"]
        profile["updated"] = timestamp(utcnow())
        carry_beta(profile, stored)
        text = service.profiles.save(profile, row)
        head.record("update", row.id, current=text if row.id == head.current else None)
        return text

    return service.commits.run(job)


def set_beta_status(status):
    service = extension.current()
    vision = (status.get("auth0") or {}).get("vision")

    def job(head):
        row = current_row(service.profiles, head, status["user"])
        profile = decode_profile(row.document)
        auth0 = profile.setdefault("auth0", {"global_id": profile["id"]})
        if vision is None:
            auth0.pop("beta", None)
        else:
            auth0["beta"] = vision
        head.record("beta", row.id, current=service.profiles.save(profile, row))
        return row.id

    stored = {"user": service.commits.run(job), "auth0": {"vision": vision} if vision else {}}
    return json.dumps(user_beta_status.dump(stored), separators=(",", ":"))


def update_vanity(request_profile, cloud_domain):
    service = extension.current()
    name = request_profile["vanityname"].lower()

    def job(head):
        row = current_row(service.profiles, head, request_profile["id"])
        profile = decode_profile(row.document)
        allocation = profile.get("allocation")
        if allocation is None:
            raise Problem(404, "The user has no cloud allocation yet: wait for the cloud to connect.")
        profile["vanityname"] = name
        allocation["urls"]["vanity"] = {
            "status": allocation["status"]["cloud"],
            "url": "https://%s.%s" % (name, cloud_domain),
        }
        text = service.profiles.save(profile, row)
        head.record("vanity", row.id, current=text)
        return text

    return service.commits.run(job)


def authenticate_from_claims(claims):
    service, subject = extension.current(), claims["sub"]

    def job(head):
        row = service.profiles.find(service.profiles.id_for_subject(subject) or profile_id_for(subject))
        stored = decode_profile(row.document) if row else None
        profile = profile_from_claims(claims, stored, utcnow())
        text = service.profiles.save(profile, row, subject=subject)
        head.record("token", profile["id"], current=text if profile["id"] == head.current else None)
        return text

    return service.commits.run(job)


def disconnect_user(user_id):
    service = extension.current()

    def job(head):
        service.profiles.get(user_id)
        service.profiles.delete(user_id)
        was_current = head.current == user_id
        if was_current:
            head.current = None
        head.record("disconnect", user_id, current="null" if was_current else None)

    service.commits.run(job)
    return list_users()


def import_records(records, progress=None):
    """Add exported users, all of them or none: one job, so one transaction. `records` are
    (line number, loaded record); a user already on the device, or a clash with one, fails
    the whole import naming the line."""
    service = extension.current()

    def job(head):
        for number, record in records:
            profile = record["profile"]
            try:
                if service.profiles.find(profile["id"]) is not None:
                    raise Problem(409, "user %r is already on this device" % profile["id"])
                text = service.profiles.save(profile, None, record.get("subject"), record["signed_in"])
            except (Problem, IntegrityError) as error:
                raise Problem(409, "line %d: %s" % (number, getattr(error, "description", error))) from None
            if record["current"]:
                head.current = profile["id"]
            head.record("import", profile["id"], current=text if record["current"] else None)
            if progress is not None:
                progress(1)

    service.commits.run(job)


def export_records():
    """Every user as `users export` writes it (wire form, as schemas.ExportedUserSchema loads
    it): the stored profile, the subject, the first sign-in, and whether it is current."""
    current = json.loads(current_profile())
    records = []
    for document, subject, signed_in in extension.current().profiles.rows():
        profile = json.loads(document)
        records.append({"profile": profile, "subject": subject, "signed_in": iso_utc(signed_in),
                        "current": bool(current) and profile["id"] == current["id"]})
    return records


def iso_utc(moment):
    """A column's naive UTC timestamp (or PostgreSQL's aware one) in ISO 8601, with its zone."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc).isoformat()


# --- reads ----------------------------------------------------------------------------------


def current_profile():
    """The current user's profile JSON, or "null" (from memory while nothing was committed)."""
    return extension.current().read_cache.current_profile()


def get_user(user_id):
    return extension.current().read_cache.user(user_id)


def list_users():
    return extension.current().profiles.listing()
