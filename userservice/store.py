"""The use cases behind the endpoints, each one transaction, testable without HTTP.

Writes are jobs the app's group commit (commits.py) runs with the change log's head (the
state row) locked, so they commit one at a time and in the order of their change-log `seq`;
each records its change in the same transaction. Responses are the stored JSON text, so a
profile is encoded once per change.
"""
import json

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
        service.profiles.mark_signed_in(profile["id"], head.seq)
        return text

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
        service.profiles.mark_signed_in(row.id, head.seq)
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
        service.profiles.mark_signed_in(profile["id"], head.seq)
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


def get_user(user_id):
    return extension.current().read_cache.user(user_id)


def list_users():
    return extension.current().profiles.listing()
