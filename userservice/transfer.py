"""Moving users between devices: `userservice users export` and `users import`.

An export line is a whole profile plus what the device keeps beside it; an import adds the
users of an export in one group-commit job, so one transaction: all of them or none.
"""
import datetime
import json

from peewee import IntegrityError

from . import extension
from .problems import Problem
from .schemas import UserProfileSchema
from .store import current_profile
from .wire import Bool, DateTime, Nested, Str, WireSchema, optional


class ExportedUserSchema(WireSchema):
    """One line of `userservice users export`: a profile, and what the device keeps beside it."""

    profile = Nested(UserProfileSchema, required=True)
    subject = optional(Str)  # the Auth0 user_id / token `sub` it signed in with
    signed_in = DateTime(required=True)  # first sign-in on this device
    current = Bool(required=True)


exported_user = ExportedUserSchema()


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
                text, _ = service.profiles.save(profile, None, record.get("subject"), record["signed_in"])
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
