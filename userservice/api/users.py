"""/users: every user known on this device."""
from flask import Blueprint, current_app
from werkzeug.routing import BaseConverter

from .. import extension, schemas, store, tokens
from . import json_text
from .body import json_body

bp = Blueprint("users", __name__)

USER_ID = "<user_id:user>"


class UserIdConverter(BaseConverter):
    """A user id in a path: 1 to 255 characters, none of them NUL, which no stored id holds
    (bodies with NUL are refused) and PostgreSQL cannot even be asked about: not found."""

    regex = r"[^/\x00]{1,255}"


def init_app(app):
    """The converter the routes' USER_ID names, registered before the blueprint is."""
    app.url_map.converters["user_id"] = UserIdConverter


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
    """The hot read, encoded once per commit (read_cache.py); fast_reads.py serves it too."""
    return json_text(extension.current().read_cache.user_answer(user))


@bp.post("/users/%s/select" % USER_ID)
def select(user):
    return json_text(store.select_known_user(user))


@bp.post("/users/%s/disconnect" % USER_ID)
def disconnect(user):
    return json_text(store.disconnect_user(user))
