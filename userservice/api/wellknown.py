"""/.well-known: how clients (the Python SDK probes ports 39300-39333) find and identify us."""
from flask import Blueprint

from .. import extension
from ..health import unready
from ..problems import ServiceUnavailable
from ..version import VERSION

bp = Blueprint("wellknown", __name__)


@bp.get("/.well-known/health")
def health():
    return "ok", 200, {"Content-Type": "text/plain; charset=utf-8"}


@bp.get("/.well-known/version")
def version():
    return VERSION, 200, {"Content-Type": "text/plain; charset=utf-8"}


@bp.get("/.well-known/ready")
def ready():
    """Readiness, unlike health: the database is reachable, migrations are current and the
    change feed is following the log."""
    problem = unready(extension.current())
    if problem:
        raise ServiceUnavailable("Not ready: %s." % problem, retry_after=5)
    return "ready", 200, {"Content-Type": "text/plain; charset=utf-8"}
