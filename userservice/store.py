"""The use cases behind the endpoints, each one transaction, testable without HTTP.

Writes are jobs the app's group commit (commits.py) runs with the change log's head (the
state row) locked, so they commit one at a time and in the order of their change-log `seq`;
each records its change in the same transaction. Responses are the stored JSON text, so a
profile is encoded once per change.
"""
import json

from . import extension
from .mapping import (align_vanity, keep_stored, profile_from_auth0, profile_from_claims, profile_id_for,
                      timestamp, vanity_url)
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


def save_sign_in(service, row, profile, stored, subject):
    """Save a sign-in's profile. It never fails for a name another user holds: a username,
    vanity name or vanity URL someone else has is not taken, and the stored one (or none)
    is kept. Returns (its JSON, whether anything was written)."""
    align_vanity(profile, service.cloud_domain)
    taken = {unique.source for unique in service.profiles.held_by_others(profile, stored)}
    if taken:
        keep_stored(profile, stored, taken)
        align_vanity(profile, service.cloud_domain)
    return service.profiles.save(profile, row, subject=subject)


# --- writes: each use case is a job of the change log's head, run by the group commit ------


def select_user(auth0_user):
    """Sign in an Auth0 user and make them current. The profile is user_metadata.global_id,
    else the user already signed in here with this user_id, else the user_id's own id."""
    service, now = extension.current(), utcnow()
    subject = auth0_user.get("user_id")
    global_id = (auth0_user.get("user_metadata") or {}).get("global_id")

    def job(head):
        user_id = global_id or service.profiles.id_for_subject(subject) or profile_id_for(subject)
        row = service.profiles.find(user_id)
        stored = decode_profile(row.document) if row else None
        profile = profile_from_auth0(auth0_user, stored, now)
        text, written = save_sign_in(service, row, profile, stored, subject)
        if written or head.current != user_id:
            head.current = user_id
            head.record("select", user_id, current=text)
        service.profiles.mark_signed_in(user_id)
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
        service.profiles.mark_signed_in(row.id)
        return row.document

    return service.commits.run(job)


def clear_user():
    def job(head):
        if head.current is not None:
            previous, head.current = head.current, None
            head.record("clear", previous, current="null")

    extension.current().commits.run(job)


def sign_out():
    """POST /os/sign_out: /user/clear, answered as PiecesOS does, with the users known here."""
    clear_user()
    return list_users()


NOBODY_TO_SIGN_IN = (
    "Nobody has signed in on this device yet, and this service has no browser sign-in: sign a "
    "user in with POST /user/select (an Auth0 user) or POST /users/authenticate/from_token (an "
    "OIDC id_token); after a sign-out, POST /os/sign_in signs the last of them in again.")


def sign_in():
    """POST /os/sign_in without the browser PiecesOS opens: whoever is signed in stays; else
    the user who signed in here last is signed in again, so that sign-out and sign-in are a
    round trip; with nobody to sign in, 511 saying how to sign in here."""
    service = extension.current()

    def job(head):
        if head.current is not None:
            return service.profiles.get(head.current).document
        row = service.profiles.last_signed_in()
        if row is None:
            raise SignInRequired(NOBODY_TO_SIGN_IN)
        head.current = row.id
        head.record("sign_in", row.id, current=row.document)
        service.profiles.mark_signed_in(row.id)
        return row.document

    return service.commits.run(job)


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
        align_vanity(profile, service.cloud_domain)
        text, written = service.profiles.save(profile, row)
        if written:
            head.record("update", row.id, current=text if row.id == head.current else None)
        return text

    return service.commits.run(job)


def set_beta_status(status):
    service = extension.current()
    vision = (status.get("auth0") or {}).get("vision")

    def job(head):
        row = current_row(service.profiles, head, status["user"])
        profile = decode_profile(row.document)
        if vision is None:
            profile.get("auth0", {}).pop("beta", None)
        else:
            profile.setdefault("auth0", {"global_id": profile["id"]})["beta"] = vision
        text, written = service.profiles.save(profile, row)
        if written:
            head.record("beta", row.id, current=text)
        return row.id

    stored = {"user": service.commits.run(job), "auth0": {"vision": vision} if vision else {}}
    return json.dumps(user_beta_status.dump(stored), separators=(",", ":"))


def update_vanity(request_profile):
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
            "url": vanity_url(name, service.cloud_domain),
        }
        text, written = service.profiles.save(profile, row)
        if written:
            head.record("vanity", row.id, current=text)
        return text

    return service.commits.run(job)


def authenticate_from_claims(claims):
    """Token sign-in follows select's rules with the token's claims; it leaves the current
    user as it is."""
    service, subject, now = extension.current(), claims["sub"], utcnow()

    def job(head):
        user_id = service.profiles.id_for_subject(subject) or profile_id_for(subject)
        row = service.profiles.find(user_id)
        stored = decode_profile(row.document) if row else None
        profile = profile_from_claims(claims, stored, now)
        text, written = save_sign_in(service, row, profile, stored, subject)
        if written:
            head.record("token", user_id, current=text if user_id == head.current else None)
        service.profiles.mark_signed_in(user_id)
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


# --- reads ----------------------------------------------------------------------------------


def no_cloud(user_id):
    """The AllocationCloud of a user with none: this service runs no Pieces Cloud, so an
    attempt to connect one fails, and there is no allocation id, project or URL to name."""
    failed = {"status": "FAILED", "url": ""}
    return {"id": "", "user": user_id, "urls": {"base": failed, "id": failed},
            "status": {"cloud": "FAILED"}, "project": ""}


def connect_cloud(user_id=None):
    """POST /allocations/connect: the signed-in user's cloud allocation as their profile holds
    it, or `no_cloud`. Writes nothing: the profile keeps saying there is no allocation."""
    document = current_profile()
    if document == "null":
        raise SignInRequired()
    profile = json.loads(document)
    if user_id is not None and user_id != profile["id"]:
        raise SignInRequired("User %r is not the signed-in user." % user_id)
    allocation = profile.get("allocation") or no_cloud(profile["id"])
    return json.dumps(allocation, separators=(",", ":"), ensure_ascii=False)


def current_profile():
    """The current user's profile JSON, or "null" (from memory while nothing was committed)."""
    return extension.current().read_cache.current_profile()


def profile_to_refresh():
    """What `refresh_user` would answer now, recording nothing (HEAD /user/refresh)."""
    document = current_profile()
    if document == "null":
        raise SignInRequired()
    return document


def get_user(user_id):
    return extension.current().read_cache.user(user_id)


def list_users():
    return extension.current().profiles.listing()
