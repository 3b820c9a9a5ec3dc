"""/os: signing in and out of this device as PiecesOS clients (pieces-cli, the SDK's
PiecesClient) ask for it."""
from flask import Blueprint

from .. import store
from . import json_text

bp = Blueprint("os", __name__)


@bp.post("/os/sign_in")
def sign_in():
    return json_text(store.sign_in())


@bp.post("/os/sign_out")
def sign_out():
    return json_text(store.sign_out())
