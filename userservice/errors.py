"""Every error leaves as RFC 9457 application/problem+json, from one place."""
import logging

from flask import json, request
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException, InternalServerError

log = logging.getLogger(__name__)


class Problem(HTTPException):
    """An HTTP error with a detail for the client and, optionally, the offending fields."""

    def __init__(self, status, detail, invalid_params=None, headers=None):
        self.code = status
        super().__init__(description=detail)
        self.invalid_params = invalid_params
        self.extra_headers = headers or {}


class SignInRequired(Problem):
    def __init__(self, detail="Sign in first: no user is signed in on this device."):
        super().__init__(511, detail)


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
    response = error.get_response()
    response.set_data(json.dumps(body))
    response.mimetype = "application/problem+json"
    response.headers.update(getattr(error, "extra_headers", {}))
    return response


def handle_http_exception(error):
    return problem_response(error)


def handle_validation_error(error):
    return problem_response(from_validation_error(error))


def handle_unexpected(error):
    """Log the failure server-side; the client learns nothing about the internals."""
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=error)
    return problem_response(InternalServerError("The server failed to handle this request."))


def init_app(app):
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(ValidationError, handle_validation_error)
    app.register_error_handler(Exception, handle_unexpected)
