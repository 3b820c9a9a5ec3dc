"""/.well-known: how clients (the Python SDK probes ports 39300-39333) find and identify us.

`/.well-known/version` is what clients check before anything else, against the PiecesOS
versions they support (pieces-cli 1.20.1 stops unless it is >=12.0.0,<13.0.0), so it names
the PiecesOS API version this service speaks (PIECES_OS_VERSION). The service's own version
travels in the X-Userservice-Version header of every answer instead.
"""
from flask import Blueprint, current_app

from .. import extension, guards
from ..health import unready
from ..problems import ServiceUnavailable
from ..version import VERSION

bp = Blueprint("wellknown", __name__)

VERSION_HEADER = "X-Userservice-Version"


@bp.get("/.well-known/health")
def health():
    return "ok", 200, {"Content-Type": "text/plain; charset=utf-8"}


@bp.get("/.well-known/stream/health")
def health_once():
    """The health stream's path without a WebSocket upgrade (the SDKs' plain GET of it): its
    first frame, once. The stream itself is in api/stream.py."""
    return health()


@bp.get("/.well-known/version")
def version():
    return current_app.config["PIECES_OS_VERSION"], 200, {"Content-Type": "text/plain; charset=utf-8"}


@bp.get("/.well-known/ready")
def ready():
    """Readiness, unlike health: the database is reachable, migrations are current and the
    change feed is following the log."""
    problem = unready(extension.current())
    if problem:
        raise ServiceUnavailable("Not ready: %s." % problem, retry_after=5)
    return "ready", 200, {"Content-Type": "text/plain; charset=utf-8"}


def identify(response):
    """Name this service's own version on each of its answers (not on an embedding site's)."""
    if guards.serves():
        response.headers[VERSION_HEADER] = VERSION
    return response


def init_app(app):
    app.after_request(identify)
