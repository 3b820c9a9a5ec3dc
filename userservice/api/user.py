"""/user: the signed-in user of this device."""
from flask import Blueprint, request

from .. import extension, read_cache, schemas, store
from . import json_text
from .body import json_body

bp = Blueprint("user", __name__)


@bp.get("/user")
def snapshot():
    """The hot read, encoded once per commit (read_cache.py); fast_reads.py serves it too."""
    return json_text(extension.current().read_cache.current_answer())


@bp.post("/user/select")
def select():
    return json_text(store.select_user(json_body(schemas.auth0_user)))


@bp.post("/user/clear")
def clear():
    store.clear_user()
    return "", 204


@bp.get("/user/refresh")
def refresh():
    if request.method == "HEAD":  # what a refresh would answer, announcing nothing
        return json_text(store.profile_to_refresh())
    return json_text(store.refresh_user())


@bp.post("/user/update")
def update():
    return json_text(store.update_user(json_body(schemas.user_profile)))


@bp.post("/user/beta/status")
def beta_status():
    return json_text(store.set_beta_status(json_body(schemas.user_beta_status)))


@bp.get("/user/providers")
def providers():
    """The signed-in user with the provider identities known locally."""
    return json_text(read_cache.returned_user_profile(store.current_profile()))


@bp.post("/user/update/vanity")
def update_vanity():
    return json_text(store.update_vanity(json_body(schemas.vanity_request)))
