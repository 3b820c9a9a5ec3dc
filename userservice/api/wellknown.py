"""/.well-known: how clients (the Python SDK probes ports 39300-39333) find and identify us."""
from flask import Blueprint

from ..version import VERSION

bp = Blueprint("wellknown", __name__)


@bp.get("/.well-known/health")
def health():
    return "ok", 200, {"Content-Type": "text/plain; charset=utf-8"}


@bp.get("/.well-known/version")
def version():
    return VERSION, 200, {"Content-Type": "text/plain; charset=utf-8"}
