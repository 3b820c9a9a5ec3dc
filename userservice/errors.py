"""The one error handler: every error leaves as RFC 9457 application/problem+json, and one
nobody expected is logged with the request's secrets blanked out."""
import logging
import traceback

from flask import current_app, g, json, request
from marshmallow import ValidationError
from werkzeug.exceptions import BadRequest, HTTPException, InternalServerError
from wsproto.utilities import RemoteProtocolError

from . import peers
from .guards import API_KEY_HEADER, API_KEY_PARAMETER
from .problems import Problem, ServiceUnavailable
from .storage import UNAVAILABLE_ERRORS, is_unavailable

log = logging.getLogger(__name__)

DATABASE_RETRY_SECONDS = 2


def flatten(messages, prefix=""):
    """Marshmallow's nested error dict as a list of {name, reason}, names in dotted wire form."""
    if isinstance(messages, dict):
        params = []
        for key, value in messages.items():
            name = key if key == "_schema" or not prefix else "%s.%s" % (prefix, key)
            params.extend(flatten(value, prefix if key == "_schema" else name))
        return params
    return [{"name": prefix or "body", "reason": reason} for reason in messages]


def from_validation_error(error):
    params = flatten(error.messages)
    detail = "Invalid request body: " + "; ".join("%s: %s" % (p["name"], p["reason"]) for p in params)
    return Problem(400, detail, invalid_params=params)


def problem_response(error):
    body = {
        "type": "about:blank",
        "title": error.name,
        "status": error.code,
        "detail": error.description,
        "instance": request.path,
    }
    invalid_params = getattr(error, "invalid_params", None)
    if invalid_params:
        body["invalid-params"] = invalid_params
    if g.get("request_id"):
        body["request-id"] = g.request_id
    response = error.get_response()
    response.set_data(json.dumps(body))
    response.mimetype = "application/problem+json"
    response.headers.update(getattr(error, "extra_headers", {}))
    return response


def handle_http_exception(error):
    return problem_response(error)


def handle_validation_error(error):
    return problem_response(from_validation_error(error))


def handle_websocket_handshake_error(error):
    """A WebSocket handshake that wsproto (under simple-websocket) cannot complete is the
    client's error, answered as wsproto suggests: 426 naming the version it speaks, or 400."""
    hint = error.event_hint
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in getattr(hint, "headers", ())}
    return problem_response(Problem(getattr(hint, "status_code", 400),
                                    "Not a WebSocket handshake this server can complete: %s." % error,
                                    headers=headers))


def handle_database_error(error):
    """Out of reach or out of connections: the client may retry, nothing was written."""
    if not is_unavailable(error):
        return handle_unexpected(error)
    log.warning("database unavailable: %s", error)
    return problem_response(ServiceUnavailable("The database is unreachable; try again shortly.",
                                               DATABASE_RETRY_SECONDS))


SECRET_FIELDS = frozenset(("access_token", "refresh_token", "id_token", "api_key", "organization_key",
                           "cloud_key", "stripe_customer_id", "x-api-key"))
REDACTED = "[redacted]"


def secrets_in(value):
    """String values under secret-named keys, anywhere in parsed JSON."""
    found, pending = set(), [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            found.update(v for k, v in item.items() if str(k).lower() in SECRET_FIELDS and isinstance(v, str) and v)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return found


def request_secrets():
    """Every secret this request carries or the server holds, longest first."""
    found = {current_app.config.get("API_KEY") or "", request.headers.get(API_KEY_HEADER, ""),
             request.args.get(API_KEY_PARAMETER, "")}
    found |= secrets_in(g.get("json_body"))
    return sorted((str(secret) for secret in found if secret), key=len, reverse=True)


def redact(text, secrets):
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


def handle_unexpected(error):
    """Log the failure server-side, secrets blanked out; the client learns nothing about the
    internals. Exception messages may quote values (a driver echoing a row, say), so the
    traceback is formatted here and redacted before it reaches any handler.

    A socket error while the client has gone (a WebSocket handshake it left, say) is no
    failure: one line says so, and the answer nobody reads is a 400, as Werkzeug's
    ClientDisconnected is."""
    if isinstance(error, OSError) and peers.gone(peers.connection(request.environ)):
        log.info("the client went away during %s %s: %s", request.method, request.path, error)
        return problem_response(BadRequest("The client closed the connection."))
    trace = "".join(traceback.format_exception(error))
    log.error("unhandled error on %s %s\n%s", request.method, request.path,
              redact(trace, request_secrets()))
    return problem_response(InternalServerError("The server failed to handle this request."))


class HideQueryParameters(logging.Filter):
    """Peewee logs each query with its parameters at DEBUG; those are profiles with tokens."""

    def filter(self, record):
        if isinstance(record.msg, tuple) and len(record.msg) == 2:
            sql, params = record.msg
            record.msg = (sql, "[%d parameters hidden]" % len(params or ()))
        return True


QUERY_FILTER = HideQueryParameters()


def init_app(app):
    logging.getLogger("peewee").addFilter(QUERY_FILTER)  # a no-op when already added
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(ValidationError, handle_validation_error)
    app.register_error_handler(RemoteProtocolError, handle_websocket_handshake_error)
    for error_class in UNAVAILABLE_ERRORS:
        app.register_error_handler(error_class, handle_database_error)
    app.register_error_handler(Exception, handle_unexpected)
