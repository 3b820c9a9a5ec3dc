"""/users: every user known on this device."""
from flask import Blueprint, current_app

from .. import extension, schemas, store, tokens
from . import json_text
from .body import json_body

bp = Blueprint("users", __name__)

USER_ID = "<string(maxlength=255):user>"


@bp.post("/users/authenticate/from_token")
def authenticate_from_token():
    token = json_body(schemas.oauth_token)
    claims = tokens.verify(token.get("id_token"), current_app.config, extension.current().token_keys)
    return json_text(store.authenticate_from_claims(claims))


@bp.get("/users")
def snapshot():
    return json_text(store.list_users())


@bp.get("/users/%s" % USER_ID)
def specific_user(user):
    return json_text(store.get_user(user))


@bp.post("/users/%s/select" % USER_ID)
def select(user):
    return json_text(store.select_known_user(user))


@bp.post("/users/%s/disconnect" % USER_ID)
def disconnect(user):
    return json_text(store.disconnect_user(user))
