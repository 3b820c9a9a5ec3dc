"""GET /openapi.json: the OpenAPI 3.1 document of this server, generated from the Marshmallow
schemas (apispec), so the wire names and limits it states are the ones the code enforces.

It describes the server it is served by: the API key appears as a security requirement only
when USERSERVICE_API_KEY is set.
"""
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, current_app, jsonify, url_for

from . import schemas
from .version import VERSION

bp = Blueprint("openapi", __name__)
EXTENSION = "userservice.openapi"

OPENAPI_VERSION = "3.1.0"
DESCRIPTION = ("The Pieces OS User and Users API. `info.version` is this service's own version, "
               "also sent as the X-Userservice-Version header of every answer; "
               "GET /.well-known/version answers the PiecesOS API version it speaks, which is "
               "what clients check.")

COMPONENTS = {
    "AllocationCloud": schemas.AllocationCloudSchema,  # before UserProfile, which nests it
    "UserProfile": schemas.UserProfileSchema,
    "ReturnedUserProfile": schemas.ReturnedUserProfileSchema,
    "Users": schemas.UsersSchema,
    "Auth0User": schemas.Auth0UserSchema,
    "UserBetaStatus": schemas.UserBetaStatusSchema,
    "OAuthToken": schemas.OAuthTokenSchema,
    "VanityRequest": schemas.vanity_request,
}

PROBLEM = {
    "type": "object",
    "description": "RFC 9457 problem details; `invalid-params` names each offending field.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "invalid-params": {"type": "array", "items": {
            "type": "object", "required": ["name", "reason"],
            "properties": {"name": {"type": "string"}, "reason": {"type": "string"}}}},
    },
}

# Auth0User's rule that someone is identified: a non-empty user_id or user_metadata.global_id.
IDENTIFIES_SOMEONE = {"anyOf": [
    {"required": ["user_id"], "properties": {"user_id": {"type": "string", "minLength": 1}}},
    {"required": ["user_metadata"], "properties": {"user_metadata": {
        "type": "object", "required": ["global_id"],
        "properties": {"global_id": {"type": "string", "minLength": 1}}}}},
]}

STATUS_MEANINGS = {
    400: "An HTTP/1.1 request without a Host (or with several, or an invalid one); or a body that "
         "is badly framed, not valid JSON, nests too deep, holds an over-long string, NUL or an "
         "unpaired surrogate, or fails the schema; `invalid-params` names each field.",
    401: "The API key is missing or wrong (only when the server is configured with one); "
         "for from_token: the id_token failed verification.",
    403: "The Host is not one this server answers to (DNS rebinding), or the Origin is not allowed.",
    404: "No such user on this device (for update/vanity: the user has no cloud allocation yet).",
    409: "The username, vanity name or vanity URL is already taken by another user.",
    408: "The request body did not arrive within BODY_TIMEOUT seconds; the connection is closed.",
    413: "The request body is larger than the server accepts.",
    415: "The request body is not sent as Content-Type: application/json.",
    426: "WebSocket: a Sec-WebSocket-Version other than 13 (named in the answer's header).",
    501: "Token sign-in is not configured on this server.",
    503: "The server cannot take this now (stream limit, or the JWKS could not be read); see Retry-After.",
    511: "Nobody is signed in on this device, or the user named is not the signed-in user "
         "(for /os/sign_in: nobody has signed in here yet; the detail says how to).",
}
GUARDED = (400, 401, 403)  # Host (400, 403), API key (401), Origin (403): every operation
WITH_BODY = (400, 408, 413, 415)

STREAM_DESCRIPTION = """The current user, live. Two transports share this path and carry the same bytes:

* **WebSocket** (a GET with `Upgrade: websocket`, answered `101 Switching Protocols`): every text
  frame is the current `UserProfile` as JSON, or `null` when nobody is signed in; the first frame
  is the state at connection time. The server pings every STREAM_PING_INTERVAL seconds.
* **Server-Sent Events** (`Accept: text/event-stream`, or any plain GET): each event is
  `id: <seq>` and `data: <the same JSON>`; comments are heartbeats. A client reconnecting with
  `Last-Event-ID` receives the changes it missed.

Browsers cannot set headers on either transport, so the API key may be given as `api_key`."""

# path, method, operationId, summary, request body component, 2xx response, other statuses
OPERATIONS = (
    ("/user", "get", "userSnapshot", "The signed-in user of this device", None,
     (200, "ReturnedUserProfile"), ()),
    ("/user/select", "post", "selectUser", "Sign in an Auth0 user on this device", "Auth0User",
     (200, "UserProfile"), (409,)),
    ("/user/clear", "post", "clearUser", "Sign the current user out", None, (204, None), ()),
    ("/user/refresh", "get", "refreshUser", "Re-announce the signed-in user to every stream", None,
     (200, "UserProfile"), (511,)),
    ("/user/update", "post", "updateUser", "Replace a stored user's profile", "UserProfile",
     (200, "UserProfile"), (404, 409)),
    ("/user/beta/status", "post", "userBetaStatus", "Set the signed-in user's beta status",
     "UserBetaStatus", (200, "UserBetaStatus"), (511,)),
    ("/user/providers", "get", "userProviders", "The signed-in user with their provider identities",
     None, (200, "ReturnedUserProfile"), ()),
    ("/user/update/vanity", "post", "userUpdateVanity", "Set the signed-in user's vanity name",
     "VanityRequest", (200, "UserProfile"), (404, 409, 511)),
    ("/users/authenticate/from_token", "post", "authenticateFromToken",
     "Add or refresh a user from a verified OIDC id_token", "OAuthToken", (200, "UserProfile"),
     (409, 501, 503)),
    ("/users", "get", "usersSnapshot", "Every user known on this device", None, (200, "Users"), ()),
    ("/users/{user}", "get", "usersSpecificUserSnapshot", "One user known on this device", None,
     (200, "UserProfile"), (404,)),
    ("/users/{user}/select", "post", "usersSelectSpecificUser",
     "Make a user known on this device the signed-in user, as stored", None,
     (200, "UserProfile"), (404,)),
    ("/users/{user}/disconnect", "post", "usersDisconnectSpecificUser",
     "Forget a user on this device", None, (200, "Users"), (404,)),
    ("/os/sign_in", "post", "signIntoOS",
     "Keep the signed-in user, or sign in again the user who signed in here last (there is no "
     "browser sign-in here)", None, (200, "UserProfile"), (511,)),
    ("/os/sign_out", "post", "signOutOfOS", "Sign the current user out, exactly as /user/clear; "
     "answers the users known here", None, (200, "Users"), ()),
    ("/allocations/connect", "post", "allocationsConnectNewCloud",
     "The signed-in user's cloud allocation as their profile holds it; without one, status FAILED "
     "(this service runs no Pieces Cloud). Writes nothing", "UserProfile", (200, "AllocationCloud"), (511,)),
)
OPTIONAL_BODIES = {"allocationsConnectNewCloud"}  # the SDKs send no body without a profile


def problem_response(status):
    return {"description": STATUS_MEANINGS[status],
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}


def json_content(component):
    return {"application/json": {"schema": {"$ref": "#/components/schemas/%s" % component}}}


def operation(operation_id, summary, request_body, success, statuses, api_key):
    status, component = success
    responses = {str(status): {"description": "OK" if component else "No Content"}}
    if component:
        responses[str(status)]["content"] = json_content(component)
    others = set(statuses) | {400, 403} | ({401} if api_key else set())
    if request_body:
        others |= set(WITH_BODY)
    for code in sorted(others):
        responses[str(code)] = problem_response(code)
    result = {"operationId": operation_id, "summary": summary, "responses": responses}
    if request_body:
        result["requestBody"] = {"required": operation_id not in OPTIONAL_BODIES,
                                 "content": json_content(request_body)}
    return result


USER_PARAMETER = {"name": "user", "in": "path", "required": True, "description": "A user's `id`.",
                  "schema": {"type": "string", "minLength": 1, "maxLength": 255}}


def stream_operation(api_key):
    responses = {
        "101": {"description": "WebSocket: each text frame is a UserProfile as JSON, or null.",
                "x-websocket-frame": {"anyOf": [{"$ref": "#/components/schemas/UserProfile"},
                                                {"type": "null"}]}},
        "200": {"description": "Server-Sent Events: `data:` is a UserProfile as JSON, or null.",
                "content": {"text/event-stream": {"schema": {"type": "string"}}}},
        "400": problem_response(400),
        "403": problem_response(403),
        "426": problem_response(426),
        "503": problem_response(503),
    }
    if api_key:
        responses["401"] = problem_response(401)
    result = {
        "operationId": "streamUser", "summary": "The current user, live (WebSocket or SSE)",
        "description": STREAM_DESCRIPTION, "responses": responses,
        "parameters": [{"name": "Last-Event-ID", "in": "header", "required": False,
                        "description": "SSE: the last `id` received, to resume from.",
                        "schema": {"type": "string", "maxLength": 32}}],
    }
    if api_key:
        result["security"] = [{"apiKeyHeader": []}, {"apiKeyQuery": []}]
    return result


def health_stream_operation(api_key):
    responses = {
        "101": {"description": "WebSocket: the text frame `ok` at once, then every "
                               "STREAM_HEARTBEAT_INTERVAL seconds while the server runs; it closes "
                               "with 1001 when the server shuts down.",
                "x-websocket-frame": {"const": "ok"}},
        "200": {"description": "Without an upgrade: `ok`, once.",
                "content": {"text/plain": {"schema": {"const": "ok"}}}},
        "400": problem_response(400),
        "403": problem_response(403),
        "503": problem_response(503),
    }
    result = {"operationId": "healthStream", "summary": "`ok` while the service runs (WebSocket), "
                                                        "as PiecesOS clients expect",
              "responses": responses}
    if api_key:
        responses["401"] = problem_response(401)
        result["security"] = [{"apiKeyHeader": []}, {"apiKeyQuery": []}]
    return result


def text_operation(operation_id, summary, api_key, guarded=True):
    responses = {"200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}},
                 "400": problem_response(400), "403": problem_response(403)}
    if api_key and guarded:
        responses["401"] = problem_response(401)
    return {"operationId": operation_id, "summary": summary, "responses": responses}


def build(api_key, metrics=True):
    """The document, as a dict."""
    spec = APISpec(title="userservice", version=VERSION, openapi_version=OPENAPI_VERSION,
                   plugins=[MarshmallowPlugin()],
                   info={"description": DESCRIPTION})
    for name, schema in COMPONENTS.items():
        spec.components.schema(name, schema=schema)
    spec.components.schema("Problem", PROBLEM)
    if api_key:
        spec.components.security_scheme("apiKeyHeader", {"type": "apiKey", "in": "header", "name": "X-API-Key"})
        spec.components.security_scheme("apiKeyQuery", {"type": "apiKey", "in": "query", "name": "api_key"})
    for path, method, *details in OPERATIONS:
        operations = {method: operation(*details, api_key=api_key)}
        parameters = [USER_PARAMETER] if "{user}" in path else None
        spec.path(path, operations=operations, parameters=parameters)
    spec.path("/user/stream", operations={"get": stream_operation(api_key)})
    spec.path("/.well-known/stream/health", operations={"get": health_stream_operation(api_key)})
    health = text_operation("health", "`ok` while the service runs", api_key, guarded=False)
    health["security"] = []
    spec.path("/.well-known/health", operations={"get": health, "head": {**health, "operationId": "healthHead"}})
    spec.path("/.well-known/version", operations={"get": text_operation(
        "version", "The PiecesOS API version this service speaks (PIECES_OS_VERSION)", api_key)})
    ready = text_operation("ready", "`ready` when the database is reachable, migrations are current and the "
                                    "change feed follows the log", api_key, guarded=False)
    ready["security"] = []
    ready["responses"]["503"] = {"description": "Not ready; `detail` says why.",
                                 "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    spec.path("/.well-known/ready", operations={"get": ready})
    if metrics:
        exposition = text_operation("metrics", "Prometheus metrics (text exposition format)", api_key)
        spec.path("/metrics", operations={"get": exposition})
    spec.path("/openapi.json", operations={"get": {
        "operationId": "openapi", "summary": "This document",
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}},
                      **{str(code): problem_response(code) for code in GUARDED if api_key or code != 401}}}})
    document = spec.to_dict()
    document["components"]["schemas"]["Auth0User"].update(IDENTIFIES_SOMEONE)
    if api_key:
        document["security"] = [{"apiKeyHeader": []}]
    return document


@bp.get("/openapi.json")
def openapi_document():
    prefix = url_for("user.snapshot")[:-len("/user")]
    return jsonify({**document(current_app), "servers": [{"url": prefix or "/"}]})


def document(app):
    """The app's document, built on first use (it depends on the app's settings only)."""
    built = app.extensions.get(EXTENSION)
    if built is None:
        built = app.extensions[EXTENSION] = build(bool(app.config["API_KEY"]), app.config["METRICS"])
    return built
