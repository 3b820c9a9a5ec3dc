"""The checks every request passes before any view runs: Host, Origin, API key, body.

A service on localhost can be reached by any web page its user opens. A page may rebind
its own name to 127.0.0.1 (refused by the Host check), send simple cross-site requests
(refused by the Origin check, and by requiring JSON bodies to be sent as JSON, which
browsers only do after a CORS preflight), or guess nothing at all when an API key is set.

The checks themselves (`check_host`, `check_api_key`, `announces_body`) take plain values,
so that the WSGI fast path of the hot reads (fast_reads.py) runs the very same ones as Flask.
"""
import hmac

from flask import current_app, request

from . import extension
from .body_reader import read_body
from .pages import OPEN_ENDPOINTS as PAGES
from .problems import NotJson, Problem

EXTENSION = "userservice.guards"
# Open without the API key (by endpoint, so also under an embedding site's prefix): health,
# which the SDKs probe to find the service, readiness, which an orchestrator probes, and the
# pages, which then ask for the key.
OPEN_ENDPOINTS = ("wellknown.health", "wellknown.ready") + PAGES
STREAM_ENDPOINTS = ("stream.event_stream", "stream.websocket_stream", "stream.health_stream")
API_KEY_HEADER = "X-API-Key"
API_KEY_PARAMETER = "api_key"  # browsers cannot set headers on a WebSocket or EventSource
PREFLIGHT_HEADERS = ("Content-Type", API_KEY_HEADER, "Last-Event-ID")
PREFLIGHT_MAX_AGE = "600"


def setting(name, config=None):
    """A list setting, given as a list or as one comma-separated string (environment)."""
    return listed((current_app.config if config is None else config)[name])


def listed(value):
    """The set of names a list setting's value gives, lowercased."""
    value = value or ()
    if isinstance(value, str):
        value = value.split(",")
    return {item.strip().lower() for item in value if item.strip()}


def host_name(host):
    """`Host` without its port: `localhost:39300` -> `localhost`, `[::1]:80` -> `[::1]`."""
    host = host.lower().rstrip(".")
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def check_host(host_sent, protocol, host, allowed):
    """DNS rebinding: a page whose name now points at us still sends its own name as Host.
    `host` is Werkzeug's `get_host` of the request (`request.host`), `allowed` the setting.

    RFC 9112 section 3.2: an HTTP/1.1 request without a Host, or with several or an invalid
    one, is a bad request (HTTP/1.0 has no Host: the server's own address stands for it).
    """
    if not host_sent:
        if protocol != "HTTP/1.0":
            raise Problem(400, "An HTTP/1.1 request must name the host it is for in a Host header.")
    elif not host:  # Werkzeug's answer for a value that is no host[:port]
        raise Problem(400, "The Host header must be one host name or address, with an optional port.")
    if "*" not in allowed and host_name(host) not in allowed:
        raise Problem(403, "This host name is not served here; a deployment lists its names in "
                           "USERSERVICE_ALLOWED_HOSTS.")


def own_origin():
    return request.host_url.rstrip("/").lower()


def origin_allowed(origin):
    origin = origin.rstrip("/").lower()
    return origin == own_origin() or origin in setting("ALLOWED_ORIGINS")


def check_origin():
    """Browsers name the page behind every cross-site fetch, form post and WebSocket."""
    origin = request.headers.get("Origin")
    if origin is not None and not origin_allowed(origin):
        raise Problem(403, "Requests from this origin are not allowed; a deployment lists the "
                           "origins it trusts in USERSERVICE_ALLOWED_ORIGINS.")


def is_preflight():
    return (request.method == "OPTIONS" and "Origin" in request.headers
            and "Access-Control-Request-Method" in request.headers)


def allowed_methods():
    """What the matched path accepts, over every rule for it (the stream has two)."""
    adapter = current_app.url_map.bind_to_environ(request.environ)
    return adapter.allowed_methods(request.path) if request.url_rule else []


def answer_preflight():
    """A CORS preflight from an allowed origin, for a method the path has: say yes."""
    check_origin()
    method = request.headers["Access-Control-Request-Method"].upper()
    methods = [m for m in allowed_methods() if m != "OPTIONS"]
    if method not in methods:
        raise Problem(403, "This path does not accept %s." % method[:16])
    response = current_app.make_response(("", 204))
    response.headers.update({
        "Access-Control-Allow-Methods": ", ".join(sorted(methods)),
        "Access-Control-Allow-Headers": ", ".join(PREFLIGHT_HEADERS),
        "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
    })
    return response


def presented_key():
    key = request.headers.get(API_KEY_HEADER)
    if key is None and request.endpoint in STREAM_ENDPOINTS:
        key = request.args.get(API_KEY_PARAMETER)
    return key


def check_api_key(expected, presented):
    """When the deployment sets USERSERVICE_API_KEY (`expected`), every caller must present it."""
    if not expected:
        return
    if presented is None or not hmac.compare_digest(
            presented.encode("utf-8", "replace"), str(expected).encode("utf-8")):
        raise Problem(401, "A valid API key is required in the %s header." % API_KEY_HEADER,
                      headers={"WWW-Authenticate": 'ApiKey header="%s"' % API_KEY_HEADER})


def announces_body(content_length, transfer_encoding):
    """Whether a request says a body follows: a Content-Length above 0 (as Werkzeug reads it),
    or chunked framing."""
    return bool(content_length) or "chunked" in transfer_encoding.lower()


def has_body():
    return announces_body(request.content_length, request.headers.get("Transfer-Encoding", ""))


def check_body():
    """Bodies are JSON only: forms and text/plain are what a page can send without asking.
    A body is then read whole here, within its limits of size and time (body_reader.py)."""
    if not has_body():
        return
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if limit is not None and (request.content_length or 0) > limit:
        raise Problem(413, "The request body is larger than %d bytes." % limit)
    if not request.is_json:
        raise NotJson()
    read_body(request, limit, extension.current().body_watchdog)


def serves():
    """Whether this request is the service's: its routes, and requests that match no route.
    An embedding site's own routes are left to it."""
    return request.url_rule is None or request.blueprint in current_app.extensions[EXTENSION]


def guard():
    """Run before every view, in order: who may ask at all, then what they may send."""
    if not serves():
        return None
    config = current_app.config
    check_host("HTTP_HOST" in request.environ, request.environ.get("SERVER_PROTOCOL"), request.host,
               setting("ALLOWED_HOSTS", config))
    if is_preflight():
        return answer_preflight()
    check_origin()
    if request.endpoint not in OPEN_ENDPOINTS:
        check_api_key(config["API_KEY"], presented_key())
    check_body()
    return None


def allow_origin(response):
    """Let pages of allowed origins read what they asked for."""
    origin = request.headers.get("Origin")
    if origin is not None and origin_allowed(origin):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.vary.add("Origin")
    return response


def init_app(app, blueprints):
    """Guard the routes of `blueprints` (and requests that match no route) from here on."""
    app.extensions[EXTENSION] = {blueprint.name for blueprint in blueprints}
    app.before_request(guard)
    app.after_request(allow_origin)
