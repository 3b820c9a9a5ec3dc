"""The hot reads, GET /user and GET /users/{user}, answered in front of Flask.

Flask's request context, routing and hooks cost more than the read itself: on the ordinary
request the read cache answers from memory. Here the same guard functions Flask's path calls
(guards.py: Host, API key, no body) and the same request id, version header and metrics are
applied, and the answer is the cache's encoded body for the present commit marker (never
stale after an acknowledged write, see read_cache.py). Anything else goes to Flask: another
method or path, a query string, an Origin header (CORS answers), a body, a refusal, the
access log, Flask's own TRUSTED_HOSTS, an id or a document not cached yet (Flask then reads
it, and says 404 when there is none), an error reaching the database.

The Host check's verdict is remembered per Host value sent (a deployment sees a few): Werkzeug's
`get_host` and the setting's parsing cost more than the rest of this path. Each new value, and
every value again after the setting changes, is judged by `guards.check_host` itself.
"""
import copy
import time

from werkzeug.wsgi import get_content_length, get_host

from . import extension, guards, logs
from .api.wellknown import VERSION_HEADER
from .problems import Problem
from .read_cache import CURRENT
from .version import VERSION

USER_PATH = "/user"
USERS_PREFIX = "/users/"
CONTENT_TYPE = ("Content-Type", "application/json")
HOSTS_REMEMBERED = 64  # Host values whose verdict is kept; past that all are forgotten


class FastReads:
    """WSGI middleware of one app: its hot reads, else `flask` (the app's own wsgi_app)."""

    def __init__(self, app, flask):
        self.config = app.config
        self.flask = flask
        self.service = app.extensions[extension.EXTENSION]
        routes = {rule.endpoint: rule.rule for rule in app.url_map.iter_rules()}
        self.current_route, self.user_route = routes["user.snapshot"], routes["users.specific_user"]
        self.host_verdicts = (None, {})  # (ALLOWED_HOSTS as judged under, {(Host, scheme): allowed})

    def __call__(self, environ, start_response):
        answered = self.answer(environ, start_response)
        return self.flask(environ, start_response) if answered is None else answered

    def answer(self, environ, start_response):
        """The response iterable, or None when Flask is to answer."""
        started = time.perf_counter()
        if (environ["REQUEST_METHOD"] != "GET" or environ.get("QUERY_STRING") or "HTTP_ORIGIN" in environ
                or environ.get("SCRIPT_NAME") or self.config["ACCESS_LOG"] or self.config["TRUSTED_HOSTS"]):
            return None
        requested = self.requested(environ.get("PATH_INFO", ""))
        if requested is None:
            return None
        route, key = requested
        if guards.announces_body(get_content_length(environ), environ.get("HTTP_TRANSFER_ENCODING", "")):
            return None
        if not self.host_allowed(environ):
            return None
        try:
            guards.check_api_key(self.config["API_KEY"], environ.get("HTTP_X_API_KEY"))
        except Problem:  # Flask answers it, as problem+json
            return None
        try:
            body = self.service.read_cache.cached_answer(key)
        except Exception:  # the database out of reach (PostgreSQL's marker): Flask answers 503
            return None
        if body is None:
            return None
        start_response("200 OK", [
            CONTENT_TYPE, ("Content-Length", str(len(body))), (VERSION_HEADER, VERSION),
            (logs.REQUEST_ID_HEADER, logs.request_id(environ.get("HTTP_X_REQUEST_ID", "")))])
        self.service.metrics.request_done(route, "GET", 200, time.perf_counter() - started)
        return [body]

    def host_allowed(self, environ):
        """Whether `guards.check_host` lets the request's Host in, judged once per value sent
        under the present setting (no Host at all is judged every time: HTTP/1.0 only)."""
        setting = self.config["ALLOWED_HOSTS"]
        judged_under, verdicts = self.host_verdicts
        if setting != judged_under:
            verdicts = {}
            self.host_verdicts = (copy.copy(setting), verdicts)
        sent = environ.get("HTTP_HOST"), environ["wsgi.url_scheme"]  # what get_host reads then
        allowed = verdicts.get(sent)
        if allowed is None:
            try:
                guards.check_host(sent[0] is not None, environ.get("SERVER_PROTOCOL"), get_host(environ),
                                  guards.listed(setting))
                allowed = True
            except Problem:  # Flask answers it, as problem+json
                allowed = False
            if sent[0] is not None:
                if len(verdicts) >= HOSTS_REMEMBERED:
                    verdicts.clear()
                verdicts[sent] = allowed
        return allowed

    def requested(self, path):
        """(route, read cache key) of /user or /users/{id} (ASCII only: Werkzeug decodes the
        rest), else None. An id is not checked here: an answer is cached only under an id
        Flask's route took, so another key finds nothing and goes to Flask."""
        if path == USER_PATH:
            return self.current_route, CURRENT
        if path.startswith(USERS_PREFIX) and path.isascii():
            return self.user_route, path[len(USERS_PREFIX):]
        return None


def init_app(app):
    """Put the fast path in front of the app's Flask (a whole app of its own: an embedding
    site keeps its own WSGI stack, and its mounts go through Flask)."""
    app.wsgi_app = FastReads(app, app.wsgi_app)
