"""/allocations: the signed-in user's Pieces Cloud, which `pieces login` asks to connect for a
user whose profile has no allocation."""
from flask import Blueprint

from .. import guards, schemas, store
from . import json_text
from .body import json_body

bp = Blueprint("allocations", __name__)


@bp.post("/allocations/connect")
def connect():
    """The body, a UserProfile, is optional (the SDKs send none without one)."""
    profile = json_body(schemas.user_profile) if guards.has_body() else {}
    return json_text(store.connect_cloud(profile.get("id")))
